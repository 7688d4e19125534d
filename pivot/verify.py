"""Are the lock files honest? `pivot verify`, the pre-commit check, and `pivot status --rev`.

A lock is honest when `pivot run` would not run its stage: same code, params, deps and outputs.
One difference from `pivot status`: an output that is simply not in this workspace (a fresh
clone, a CI job without the cache) does not make its lock dishonest, so verify treats absent
cached outputs as restorable. A metric is committed to git, so a missing or edited metric does.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pivot.errors import PivotError
from pivot.layout import (
    LOCK_SUFFIX,
    PARAMS_FILE,
    STAGES_DIR,
    TMP_DIR,
    TRACKED_DIR,
    TRACKED_SUFFIX,
    stage_file,
    stage_of_file,
)

if TYPE_CHECKING:
    from pivot.checkmemo import Signed, Staging
    from pivot.git import WorkTreeChanges
    from pivot.lock import StageLock
    from pivot.planning import Planned
    from pivot.repo import Repo
    from pivot.tracked import Tracked

LOCKS_DIR = STAGES_DIR
TRACKED_FIX = "pivot track {path} (records this version) or 'pivot checkout --force' (restores the recorded one)"


@dataclass(frozen=True)
class StaleStage:
    name: str
    reasons: tuple[str, ...]
    fix: str


@dataclass(frozen=True)
class FileProblem:
    path: str
    problem: str
    fix: str
    stage: str | None = None


@dataclass(frozen=True)
class TrackedChange:
    """Tracked data whose workspace content is not what its record says, or is not cached."""

    path: str
    state: str  # "modified", "missing" or "uncached" (matches its record, but the cache lacks it)
    message: str
    current: str | None = None  # the hash of the data here (None: missing)


@dataclass
class Report:
    stages: int = 0
    stale: list[StaleStage] = field(default_factory=list)
    metrics: list[FileProblem] = field(default_factory=list)  # workspace metric vs its lock
    staging: list[FileProblem] = field(default_factory=list)  # staged vs workspace (pre-commit)
    orphans: list[FileProblem] = field(default_factory=list)  # lock files of stages no longer in the pipeline
    tracked: list[FileProblem] = field(default_factory=list)  # tracked data whose content differs from its record
    restorable: list[str] = field(default_factory=list)  # outputs missing or modified here: not a problem
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.stale or self.metrics or self.staging or self.orphans or self.tracked)

    def to_json(self) -> dict[str, Any]:
        def files(items: list[FileProblem]) -> list[dict[str, Any]]:
            return [{"path": f.path, "stage": f.stage, "problem": f.problem, "fix": f.fix} for f in items]

        return {
            "ok": self.ok,
            "stages": self.stages,
            "stale": [{"stage": s.name, "reasons": list(s.reasons), "fix": s.fix} for s in self.stale],
            "metrics": files(self.metrics),
            "staging": files(self.staging),
            "orphan_locks": files(self.orphans),
            "tracked": files(self.tracked),
            "restorable_outputs": list(self.restorable),
            "notes": list(self.notes),
        }

    def lines(self, limit: int | None = None) -> list[str]:
        """The problems, for a terminal: each with what is wrong and the command that fixes it.
        With `limit`, at most that many stale stages are listed (a git hook's output stays short)."""
        out: list[str] = []
        for s in self.stale[:limit]:
            out.append(f"{s.name}: stale")
            out.extend(f"    - {r}" for r in s.reasons)
            out.append(f"    fix: {s.fix}")
        if limit is not None and len(self.stale) > limit:
            out.append(f"... and {len(self.stale) - limit} more stale stage(s); 'pivot verify' lists them all")
        for f in self.metrics + self.staging + self.orphans + self.tracked:
            owner = f" (stage {f.stage})" if f.stage else ""
            out.append(f"{f.path}{owner}: {f.problem}")
            out.append(f"    fix: {f.fix}")
        return out

    def summary(self) -> str:
        parts = []
        if self.stale:
            parts.append(f"{len(self.stale)} of {self.stages} stage(s) stale")
        if self.metrics:
            parts.append(f"{len(self.metrics)} metric(s) do not match their lock")
        if self.staging:
            parts.append(f"{len(self.staging)} file(s) staged differently from the workspace")
        if self.orphans:
            parts.append(f"{len(self.orphans)} orphan lock file(s)")
        if self.tracked:
            parts.append(f"{len(self.tracked)} tracked path(s) differ from their record")
        return ", ".join(parts)


# -- the workspace against its own lock files ----------------------------------------------------


def verify(repo: Repo, targets: tuple[str, ...] = (), remember: bool = True, earlier: Signed | None = None) -> Report:
    """Stale stages (with reasons) and metrics whose content does not match their lock. Decided
    with Policy.VERIFY: cached outputs missing from the workspace count as restorable. With
    `remember` (and no targets), a clean result is memoised for the pre-commit check (`earlier`:
    stats the memo lookup took, see pivot/checkmemo.py)."""
    from pivot import checkmemo
    from pivot.planning import plan
    from pivot.status import Policy

    signed = checkmemo.before_check(repo, earlier) if not targets and remember else None
    planned = plan(repo, targets, policy=Policy.VERIFY)
    report = Report(stages=len(planned))
    modified = False  # an output present but not as locked, restorable only while its object is cached
    for p in planned:
        if p.decision.run:
            report.stale.append(StaleStage(p.name, p.decision.reasons, f"pivot run {p.name}"))
        report.restorable.extend(r.path for r in p.decision.restore)
        prep = p.prepared
        if prep is None:
            continue
        if prep.lock is not None:
            report.metrics.extend(_metric_problems(p.name, prep.lock, prep.current.outs))
        modified |= any(prep.current.outs.get(r.path, ("", None))[1] is not None for r in p.decision.restore)
    report.orphans = [FileProblem(o.path, f"orphan lock: {o.why}",
                                  f"pivot run (removes it) or 'git rm {o.path}', then commit the deletion")
                      for o in repo.orphan_locks()]
    if not targets:
        _add_tracked(report, tracked_changes(repo, check_cache=True))
    if signed is not None:
        clean = report.ok and not modified
        stages = _stage_digests(repo, planned) if clean and checkmemo.trusted(repo, signed[1]) else None
        checkmemo.record(repo, signed[0], signed[1] if clean else None, stages)
    return report


def _stage_digests(repo: Repo, planned: list[Planned]) -> dict[str, str] | None:
    """Each stage's code and definition, for the pre-commit check (`checkmemo.code_only`)."""
    from pivot.checkmemo import stage_digest

    found = {}
    for p in planned:
        if p.prepared is None:
            return None
        found[p.name] = stage_digest(repo, p.name, p.prepared.current.fingerprint, p.prepared.current.params)
    return found


def tracked_changes(repo: Repo, check_cache: bool = False) -> list[TrackedChange]:
    """Tracked data whose workspace content differs from its record or is missing, and with
    `check_cache` data that matches its record while the cache lacks it (so 'pivot push' could
    not upload it; a look at every object, which `pivot status` does not pay for)."""
    from pivot import tracked

    found = []
    for t in tracked.read_all(repo.root):
        current = repo.hasher.hash_path(t.path)
        if current is None:
            fix = "run 'pivot checkout' to restore it" if repo.in_cache(t.record) else \
                "run 'pivot pull' to fetch it"
            found.append(TrackedChange(t.path, "missing", f"missing: {fix}"))
        elif current.hash != t.hash:
            found.append(TrackedChange(t.path, "modified", f"modified: run 'pivot track {t.path}' to record it",
                                       current.hash))
        elif check_cache and not repo.in_cache(t.record):
            found.append(TrackedChange(t.path, "uncached", f"not in the cache: run 'pivot track {t.path}' to "
                                       "store it", current.hash))
    return found


def _add_tracked(report: Report, found: list[TrackedChange]) -> None:
    """Tracked data into the report: missing data is restorable (like a missing output), the rest
    is a problem."""
    for c in found:
        if c.state == "missing":
            report.restorable.append(c.path)
        elif c.state == "modified":
            report.tracked.append(FileProblem(c.path, "tracked data differs from its record",
                                              TRACKED_FIX.format(path=c.path)))
        else:
            report.tracked.append(FileProblem(c.path, "tracked data matches its record but is not in the cache, "
                                              "so 'pivot push' could not upload it", f"pivot track {c.path}"))


def _metric_problems(stage: str, lock: StageLock, current: dict[str, tuple[str, str | None]]) -> list[FileProblem]:
    problems = []
    for rec in lock.outs:
        if rec.cached or rec.path not in current:
            continue
        digest = current[rec.path][1]
        if digest is None:
            problems.append(FileProblem(rec.path, "metric is missing; its lock records it",
                                        f"pivot run {stage}, or restore it with 'git checkout -- {rec.path}'", stage))
        elif digest != rec.hash:
            undo = f"pivot run {stage}, or undo the edit with 'git checkout -- {rec.path}'"
            problems.append(FileProblem(rec.path, "metric does not match its lock (edited by hand, or written "
                                        "outside 'pivot run')", undo, stage))
    return problems


# -- what is being committed ----------------------------------------------------------------------


def verify_staged(start: Path) -> Report:
    """The pre-commit check: verify the code being committed (unstaged changes are set aside
    while the pipeline is loaded and planned), and require every lock file and metric, and the
    user modules the pipeline imports, to be staged as they are in the workspace."""
    from pivot import checkmemo, git
    from pivot.project import find_root, load_project

    root = find_root(start)
    top = git.toplevel(root)
    prefix = git.project_prefix(top, root)
    changes = git.worktree_changes(top, prefix, (LOCKS_DIR, TRACKED_DIR, PARAMS_FILE))
    pending = _unstaged_locks(root, changes)
    records = _unstaged_records(root, changes)
    # Nothing unstaged in the project (git status just said so): nothing to set aside, and no
    # `git write-tree` and `git diff-index` to find that out.
    aside = git.unstaged_changes_set_aside(top, prefix, root / TMP_DIR / "hooks") if changes.unstaged \
        else contextlib.nullcontext(False)
    with aside as set_aside:
        project = load_project(root)
        staging, earlier, candidate = checkmemo.look_up(project.root, project.state_path)
        if staging is not None:
            report = Report(stages=len(staging.stages))
            report.notes.append("nothing the check reads changed since the last full check")
        else:
            from pivot.repo import Repo  # imports the heavy parts: only when the full check runs

            repo = Repo(project)
            try:
                if candidate is not None and earlier is not None and checkmemo.code_only(repo, candidate, earlier):
                    report, staging = Report(stages=len(candidate.staging.stages)), candidate.staging
                    report.notes.append("only the pipeline's code changed since the last full check, and no "
                                        "stage's fingerprint, params, deps or outputs did")
                else:
                    report, staging = verify(repo, earlier=earlier), checkmemo.Staging.of(repo)
                    if pending and not report.ok:
                        report = _as_if_added(repo, report, pending)
                    if records and report.tracked:
                        report.tracked = _tracked_as_if_added(repo, report.tracked, records)
            finally:
                repo.close()
    more = [*staging.modules, *(path for _stage, path in staging.metrics)]
    changes = replace(changes, untracked=changes.untracked | git.untracked(top, prefix, more))
    report.staging = staging_problems(root, staging, changes)
    if set_aside:
        report.notes.append("unstaged changes were set aside while checking, and put back")
    if not pending:
        locks = {f.stage: f.fix for f in report.staging if f.path.startswith(LOCKS_DIR + "/")}
        report.stale = [replace(s, fix=locks[s.name]) if s.name in locks else s for s in report.stale]
    return report


def _unstaged_locks(root: Path, changes: WorkTreeChanges) -> dict[str, bytes]:
    """The workspace's bytes of the lock files that are modified or new but not staged, by stage."""
    if changes.is_untracked(f"{LOCKS_DIR}/"):  # the whole folder is new
        names = [f"{LOCKS_DIR}/{p.name}" for p in (root / LOCKS_DIR).glob(f"*{LOCK_SUFFIX}")]
    else:
        names = [*(p for p, code in changes.unstaged.items() if code != "D"), *changes.untracked]
    found: dict[str, bytes] = {}
    for rel in sorted(names):
        folder, _, name = rel.rpartition("/")
        stage = stage_of_file(name, LOCK_SUFFIX) if folder == LOCKS_DIR else None
        if stage is not None:
            try:
                found[stage] = (root / rel).read_bytes()
            except OSError:
                continue  # unreadable: the staging check reports it
    return found


def _unstaged_records(root: Path, changes: WorkTreeChanges) -> dict[str, Tracked]:
    """The workspace's tracked-data records that are modified but not staged, by path."""
    from pivot import tracked  # lazy: only for the pre-commit check

    found: dict[str, Tracked] = {}
    for rel, code in changes.unstaged.items():
        if code != "D" and rel.startswith(TRACKED_DIR + "/") and rel.endswith(TRACKED_SUFFIX):
            try:
                record = tracked.loads((root / rel).read_bytes(), rel, rel.rsplit("/", 1)[-1])
            except (OSError, PivotError):
                continue  # unreadable: the staging check names it
            found[record.path] = record
    return found


def _tracked_as_if_added(repo: Repo, problems: list[FileProblem], records: dict[str, Tracked]) -> list[FileProblem]:
    """Tracked data that matches its workspace record, which only lacks 'git add' (the staging
    problems name that), is not a problem of its own."""
    kept = []
    for f in problems:
        record = records.get(f.path)
        current = repo.hasher.hash_path(f.path) if record is not None else None
        if record is None or current is None or current.hash != record.hash:
            kept.append(f)
    return kept


def _as_if_added(repo: Repo, report: Report, pending: dict[str, bytes]) -> Report:
    """The check again as if the unstaged lock files were added. A problem it no longer finds
    was only the missing 'git add' (which the staging problems name), not a stage to re-run, and
    neither are the stages downstream of it. It only removes problems, never adds them."""
    from pivot import lock as lockfile  # lazy: only when a check fails with locks left unstaged

    for name, data in pending.items():
        if name not in repo.graph.stages:
            continue
        try:
            repo.assume_lock(name, lockfile.loads(data, f"{LOCKS_DIR}/{stage_file(name, LOCK_SUFFIX)}"))
        except PivotError:
            return report  # an unreadable lock: the first answer stands
    again = verify(repo, remember=False)
    stale = {s.name for s in again.stale}
    metrics = {(m.path, m.problem) for m in again.metrics}
    return replace(report, stale=[s for s in report.stale if s.name in stale],
                   metrics=[m for m in report.metrics if (m.path, m.problem) in metrics])


def staging_problems(root: Path, staging: Staging, changes: WorkTreeChanges) -> list[FileProblem]:
    problems: list[FileProblem] = []
    metrics: dict[str, list[str]] = {}
    for stage, path in staging.metrics:
        metrics.setdefault(stage, []).append(path)
    for name in staging.stages:
        lock_rel = f"{LOCKS_DIR}/{stage_file(name, LOCK_SUFFIX)}"
        _staged_as_in_workspace(root, lock_rel, "lock file", name, changes, problems)
        for path in metrics.get(name, ()):
            _staged_as_in_workspace(root, path, "metric", name, changes, problems)
    for rel in _record_files(root, changes):
        _staged_as_in_workspace(root, rel, "tracked-data record", None, changes, problems)
    for path in [*staging.modules, PARAMS_FILE]:
        if changes.is_untracked(path) and (root / path).is_file():
            what = "parameters file" if path == PARAMS_FILE else "module imported by the pipeline"
            problems.append(FileProblem(path, f"{what}, but not staged: the commit would lack it", f"git add {path}"))
    return problems


def _record_files(root: Path, changes: WorkTreeChanges) -> list[str]:
    """The tracked-data record files in the workspace, and those deleted but still staged."""
    folder = root / TRACKED_DIR
    names = {f"{TRACKED_DIR}/{p.name}" for p in folder.glob(f"*{TRACKED_SUFFIX}")} if folder.is_dir() else set()
    names |= {p for p in changes.unstaged if p.startswith(TRACKED_DIR + "/") and p.endswith(TRACKED_SUFFIX)}
    return sorted(names)


def _staged_as_in_workspace(root: Path, path: str, what: str, stage: str | None, changes: WorkTreeChanges,
                            problems: list[FileProblem]) -> None:
    status = changes.unstaged.get(path)
    if status == "D":
        problems.append(FileProblem(path, f"{what} deleted in the workspace but still staged", f"git add {path}",
                                    stage))
    elif status is not None:
        problems.append(FileProblem(path, f"{what} differs from its staged version", f"git add {path}", stage))
    elif changes.is_untracked(path) and (root / path).exists():
        problems.append(FileProblem(path, f"{what} is not staged", f"git add {path}", stage))


# -- the workspace against another revision's lock files ---------------------------------------------


@dataclass(frozen=True)
class TrackedDiff:
    """A tracked path at REV against the workspace now."""

    path: str
    differs: bool
    reason: str


@dataclass
class RevComparison:
    rev: str
    commit: str
    planned: list[Planned]
    only_at_rev: list[str]  # stages with a lock at REV that the pipeline no longer defines
    tracked: list[TrackedDiff] = field(default_factory=list)  # tracked at REV or now (no stages named)


def compare_with_rev(repo: Repo, rev: str, targets: tuple[str, ...] = ()) -> RevComparison:
    """For each stage, what differs between the lock recorded at `rev` and the workspace now:
    the decision `pivot run` would make if REV's lock files were the current ones. Each stage is
    compared on its own (no 'upstream will run'), so every difference is named where it is."""
    from pivot.history import History
    from pivot.planning import Planned
    from pivot.status import Decision, decide

    history = History(repo.root)  # bound first: GitHistory.__enter__ is typed as returning GitHistory
    with history:
        commit = str(history.commit(rev).id)
        locks = history.locks_at(commit)
        then = None if targets else history.tracked_of(history.commit(commit))
    names = repo.graph.select(list(targets), False)
    repo.check_params(names)
    planned = []
    for name in names:
        prep = repo.prepare(name)
        lock = locks.get(name)
        if lock is None:
            decision = Decision(True, (f"no lock file at {rev} (the stage was new or had not run there)",))
        else:
            cur = prep.current
            cached = frozenset(r.path for r in lock.outs
                               if r.cached and r.path in cur.outs and cur.outs[r.path][1] != r.hash
                               and repo.in_cache(r))
            decision = decide(replace(cur, cached=cached), lock)
        planned.append(Planned(name, decision, prep.current.notes))
    only = sorted(set(locks) - set(repo.graph.stages))
    return RevComparison(rev, commit, planned, only, [] if then is None else _tracked_against(repo, then, rev))


def _tracked_against(repo: Repo, then: list[Tracked], rev: str) -> list[TrackedDiff]:
    """Each path tracked at `rev` or now: does the workspace's data (its record, when the data is
    not here) hold what the record at `rev` says?"""
    from pivot import tracked

    now = {t.path: t for t in tracked.read_all(repo.root)}
    old = {t.path: t for t in then}
    found = []
    for path in sorted(set(now) | set(old)):
        if path not in old:
            found.append(TrackedDiff(path, True, f"not tracked at {rev}"))
        elif path not in now:
            found.append(TrackedDiff(path, True, f"tracked at {rev}, not tracked now"))
        else:
            current = repo.hasher.hash_path(path)
            digest = now[path].hash if current is None else current.hash
            same = digest == old[path].hash
            found.append(TrackedDiff(path, not same, f"same as at {rev}" if same else
                                     f"content differs from its record at {rev}"))
    return found
