"""What the git hooks do: pre-commit checks, post-checkout/post-merge follow the lock files,
pre-push uploads what the pushed commits need. Each returns what to print and the exit code;
`pivot.hooks` (the entry point the hook scripts call) prints it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pivot.errors import PivotError
from pivot.layout import PIVOT_DIR
from pivot.workspace import Workspace

if TYPE_CHECKING:
    from pivot.checkout import CheckoutResult
    from pivot.records import NeededOutput

LIST_AT_MOST = 10


@dataclass
class HookOutcome:
    code: int = 0
    lines: list[str] = field(default_factory=list)  # printed as they are (a report)
    said: list[str] = field(default_factory=list)  # printed after them, each as "pivot: …"


def listed(paths: list[str]) -> str:
    more = len(paths) - LIST_AT_MOST
    return ", ".join(paths[:LIST_AT_MOST]) + (f" and {more} more" if more > 0 else "")


# pre-commit ----------------------------------------------------------------------------------------


def pre_commit(root: Path) -> HookOutcome:
    """Refuse a commit whose lock files are not honest, or not staged as in the workspace."""
    from pivot.ops.verify import verify_staged

    if not (root / PIVOT_DIR).is_dir():
        return HookOutcome()  # no Pivot project on this branch: nothing to guard
    try:
        pipeline = Workspace(root).config.pipeline
        if pipeline.endswith(".py") and not (root / pipeline).exists():
            return HookOutcome()  # a project without stages yet
        report = verify_staged(root)
    except PivotError as exc:
        return HookOutcome(1, [], [f"cannot check this commit: {exc}",
                                   "fix that, or skip this check once with 'git commit --no-verify'"])
    if report.ok:
        return HookOutcome()
    return HookOutcome(1, report.lines(limit=LIST_AT_MOST), [
        f"commit refused: {report.summary()}.",
        "Run the fixes above (then 'git add' the lock files and metrics), or skip this check once "
        "with 'git commit --no-verify'."])


# post-checkout / post-merge --------------------------------------------------------------------


def post_checkout(root: Path, previous: str, new: str, branch_switch: str) -> HookOutcome:
    if branch_switch != "1" or previous == new:
        return HookOutcome()  # a file checkout, or the same commit: outputs already match
    return post_merge(root)


def post_merge(root: Path) -> HookOutcome:
    try:
        said = follow_locks(root)
    except Exception as exc:  # a bug must not fail the user's checkout either
        said = [f"outputs not updated: internal error {type(exc).__name__}: {exc}; run 'pivot checkout'"]
    return HookOutcome(0, [], said)


def follow_locks(root: Path) -> list[str]:
    """Bring workspace outputs in line with the lock files now checked out, from the cache; an
    output modified by hand is saved to the cache first. Never raises for a user problem: the
    messages say what was not done and how to finish."""
    from pivot.checkout import Modified, checkout

    if not (root / PIVOT_DIR).is_dir():
        return []
    with Workspace(root) as ws:
        try:
            repo = ws.repo
        except PivotError as exc:
            return [f"outputs not updated: {exc}", "fix that, then run 'pivot checkout'"]
        try:
            with ws.lock("checkout (git hook)"):
                result = checkout(repo, modified=Modified.SAVE_TO_CACHE)
        except PivotError as exc:
            return [f"outputs not updated: {exc}", "then run 'pivot checkout'"]
        return _checkout_messages(ws, result)


def _checkout_messages(ws: Workspace, result: CheckoutResult) -> list[str]:
    lines = list(result.warnings)
    if result.restored:
        lines.append(f"restored {len(result.restored)} output(s) to match the lock files: {listed(result.restored)}")
    for path, digest in result.saved:
        lines.append(f"{path} had changes recorded in no lock file; they were saved in the cache as "
                     f"{ws.cache.path(digest)} before it was replaced")
    if result.missing:
        lines.append(f"{len(result.missing)} output(s) are not in the local cache: {listed(result.missing)}; "
                     "run 'pivot pull' to fetch them (or 'pivot run' to rebuild them)")
    for path, why in result.kept:
        lines.append(f"{path} was not replaced: {why}; run 'pivot checkout --force' to replace it")
    return lines


# pre-push ---------------------------------------------------------------------------------------


@dataclass
class PushPlan:
    """What the pushed commits need from the cache."""

    commits: list[str] = field(default_factory=list)
    outputs: dict[str, NeededOutput] = field(default_factory=dict)  # hash -> the output that needs it
    objects: set[str] = field(default_factory=set)  # every object: files, manifests, files in folders
    missing: list[str] = field(default_factory=list)  # hashes of outputs not in the local cache


def push_plan(root: Path, remote: str, refs: str) -> PushPlan:
    """Parse the refs git gives a pre-push hook and list the cache objects those commits need."""
    from pivot.git import parse_push_refs
    from pivot.history import History

    updates = parse_push_refs(refs)
    history = History(root)  # bound first: GitHistory.__enter__ is typed as returning GitHistory
    with history:
        commits = history.commits_to_push(updates, remote)
        outputs = history.outputs_needed(commits)
    cache = Workspace(root).cache
    objects = set(outputs)
    for digest, need in outputs.items():
        if need.is_dir and cache.has(digest):
            objects.update(e.hash for e in cache.read_manifest(digest))
    missing = sorted(d for d in outputs if not cache.has(d))
    return PushPlan(commits, outputs, objects, missing)


def pre_push(root: Path, remote: str, refs: str) -> HookOutcome:
    """Upload what the commits being pushed need; never stops the push."""
    if not (root / PIVOT_DIR).is_dir():
        return HookOutcome()
    try:
        plan = push_plan(root, remote, refs)
    except PivotError as exc:
        return HookOutcome(0, [], [f"could not work out which cache objects this push needs: {exc}"])
    return HookOutcome(0, [], upload(root, plan))


def upload(root: Path, plan: PushPlan) -> list[str]:
    """Upload `plan.outputs` to the default Pivot remote (`pivot push` of them). A failure is
    reported, with the command that finishes the job."""
    if not plan.outputs:
        return []
    from pivot.remote import default_jobs, human, push

    lines = [f"the {len(plan.commits)} commit(s) being pushed need {len(plan.objects)} cache object(s) "
             f"for {len(plan.outputs)} output(s)"]
    try:
        with Workspace(root) as ws:
            if not ws.config.remotes:
                lines[0] += ("; no Pivot remote is configured, so none were uploaded "
                             "(add one with 'pivot remote add NAME URL --default')")
                return lines
            spec = ws.remote(None)
            jobs = default_jobs(spec.url)
            storage = ws.storage(spec, jobs)
            result = push(storage, ws.cache, plan.outputs, jobs)
            from pivot.runcache import push_records  # lazy: only when objects were pushed

            records = push_records(storage, ws.cache.dir, plan.outputs, [*result.missing, *result.corrupt], jobs)
    except PivotError as exc:
        lines.append(f"could not upload them: {exc}")
        lines.append("fix that, then run 'pivot push --all-branches'")
        return lines
    lines.append(f"uploaded {len(result.done)} object(s) ({human(result.bytes)}) to Pivot remote '{spec.name}'; "
                 f"{result.present} were already there" + (f", and {records} run record(s)" if records else ""))
    problems = {**result.missing, **result.corrupt}
    if problems:
        lines.append(f"{len(problems)} of them are not in the local cache (or are damaged there), so the remote lacks "
                     f"them: {listed(sorted(set(problems.values())))}; 'pivot run' rebuilds them")
    return lines
