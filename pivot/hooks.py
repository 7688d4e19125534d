"""Git hooks: installing the shell shims from pivot/resources/hooks, and what each hook does.

An installed hook is a small shell script with a marker line. It calls back into the pivot that
installed it (`pivot hooks run HOOK`), else the `pivot` on PATH. A hook the user already had is
moved aside to `<hook>.pre-pivot`; `pivot hooks run` runs it first (its exit code counts) and
uninstall puts it back. Hooks go to the repository's common git dir, so every linked work tree
(`git worktree add`) shares them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pivot.errors import GitError, PivotError

if TYPE_CHECKING:
    from pivot.checkout import CheckoutResult
    from pivot.records import NeededOutput as Needed
    from pivot.repo import Repo

HOOK_TYPES = ("pre-commit", "post-checkout", "post-merge", "pre-push")
GUARDS = ("pre-commit", "pre-push")  # hooks whose exit code can stop git
MARKER = "pivot-hook-marker"
LEGACY_SUFFIX = ".pre-pivot"
_RUNNING_LEGACY = "PIVOT_RUNNING_LEGACY_HOOK"
_LIST_AT_MOST = 10


# -- the scripts ----------------------------------------------------------------------------------


def script(hook_type: str) -> str:
    """The hook script shipped in the package (identical to the repository's hooks/ folder)."""
    from importlib.resources import files

    return files("pivot").joinpath("resources", "hooks", hook_type).read_text()


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def render(hook_type: str, pivot: str | None, project: str) -> str:
    """The script with the installing pivot and the project folder filled in."""
    lines = script(hook_type).splitlines(keepends=True)
    values = {"PIVOT": pivot or "", "PROJECT": project}
    for i, line in enumerate(lines):
        name = line.partition("=")[0]
        if name in values and not line.startswith(" "):
            lines[i] = f"{name}={_sh_quote(values.pop(name))}\n"
    assert not values, f"hook script {hook_type} lacks {sorted(values)}"
    return "".join(lines)


def is_ours(path: Path) -> bool:
    try:
        return path.is_file() and MARKER.encode() in path.read_bytes()
    except OSError:
        return False


def installing_pivot() -> str | None:
    """The `pivot` executable running now, so hooks call the same installation."""
    candidates = [sys.argv[0], str(Path(sys.executable).parent / "pivot"), shutil.which("pivot") or ""]
    for c in candidates:
        if c and os.path.basename(c) == "pivot" and os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    return None


# -- where hooks go ---------------------------------------------------------------------------------


def hooks_dir(start: Path, refuse_hooks_path: bool = True) -> Path:
    from pivot import git

    default = git.common_dir(start) / "hooks"
    configured = git.config_value(start, "core.hooksPath")
    if configured and refuse_hooks_path:
        where = Path(os.path.expanduser(configured))
        where = where if where.is_absolute() else git.toplevel(start) / where
        if os.path.realpath(where) != os.path.realpath(default):
            raise GitError(
                f"core.hooksPath is set (to '{configured}'), so git would not run hooks installed in {default}; "
                "run 'git config --unset-all core.hooksPath' and then 'pivot hooks install', or call "
                "'pivot hooks run <hook> -- \"$@\"' from the hooks in that folder"
            )
    return default


@dataclass(frozen=True)
class HookChange:
    hook: str
    path: Path
    action: str  # installed | updated | unchanged | removed | absent | foreign
    chained: Path | None = None  # the user's previous hook, kept and run first
    restored: bool = False  # uninstall put the previous hook back


def _legacy(path: Path) -> Path:
    return path.with_name(path.name + LEGACY_SUFFIX)


def install(start: Path, hook_types: tuple[str, ...] = HOOK_TYPES) -> list[HookChange]:
    """Install (or update) the hooks; installing again changes nothing."""
    from pivot import atomic, git
    from pivot.project import find_root

    root = find_root(start)
    project = git.project_prefix(git.toplevel(root), root) or "."
    directory = hooks_dir(root)
    for hook in hook_types:
        path = directory / hook
        if os.path.lexists(path) and not is_ours(path) and os.path.lexists(_legacy(path)):
            raise GitError(
                f"{path} is not pivot's, and {_legacy(path).name} already holds a hook pivot chained before; "
                "merge the two into one file (or remove one), then run 'pivot hooks install' again"
            )
    pivot = installing_pivot()
    changes = []
    for hook in hook_types:
        path = directory / hook
        content = render(hook, pivot, project)
        if is_ours(path):
            same = path.read_text() == content and os.access(path, os.X_OK)
            action = "unchanged" if same else "updated"
        else:
            if os.path.lexists(path):
                os.replace(path, _legacy(path))
            action = "installed"
        if action != "unchanged":
            atomic.write_text(path, content)
            os.chmod(path, 0o755)
        chained = _legacy(path) if os.path.lexists(_legacy(path)) else None
        changes.append(HookChange(hook, path, action, chained))
    return changes


def uninstall(start: Path, hook_types: tuple[str, ...] = HOOK_TYPES) -> list[HookChange]:
    """Remove pivot's hooks and put back the hooks they had chained."""
    directory = hooks_dir(start, refuse_hooks_path=False)
    changes = []
    for hook in hook_types:
        path, legacy = directory / hook, _legacy(directory / hook)
        if os.path.lexists(path) and not is_ours(path):
            changes.append(HookChange(hook, path, "foreign"))
            continue
        action = "removed" if os.path.lexists(path) else "absent"
        if action == "removed":
            path.unlink()
        restored = os.path.lexists(legacy)
        if restored:
            os.replace(legacy, path)
        changes.append(HookChange(hook, path, action, restored=restored))
    return changes


# -- running a hook -----------------------------------------------------------------------------


def run_hook(hook_type: str, args: tuple[str, ...], hook_dir: Path | None, project: str) -> int:
    """What an installed hook runs: the chained hook first, then pivot's action. The exit code
    of a guard hook (pre-commit, pre-push) is non-zero when either failed; post-checkout and
    post-merge return the chained hook's code, as pivot never fails a checkout."""
    if os.environ.get(_RUNNING_LEGACY):
        return 0  # the chained hook is itself a pivot hook: it must not run pivot twice
    _absolute_git_env()
    stdin = sys.stdin.buffer.read() if hook_type == "pre-push" and not sys.stdin.isatty() else b""
    chained = _run_chained(hook_type, hook_dir, args, stdin)
    root = Path(os.getcwd()) / project  # git runs hooks at the top of the work tree
    ours = ACTIONS[hook_type](root.resolve(), args, stdin)
    if hook_type in GUARDS:
        return chained or ours
    return chained


def _absolute_git_env() -> None:
    """Git may export relative GIT_DIR / GIT_INDEX_FILE to hooks; pivot changes directory."""
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY"):
        value = os.environ.get(var)
        if value and not os.path.isabs(value):
            os.environ[var] = os.path.abspath(value)


def _run_chained(hook_type: str, hook_dir: Path | None, args: tuple[str, ...], stdin: bytes) -> int:
    if hook_dir is None:
        return 0
    legacy = hook_dir / (hook_type + LEGACY_SUFFIX)
    if not os.access(legacy, os.X_OK):
        return 0
    env = {**os.environ, _RUNNING_LEGACY: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        return subprocess.run([str(legacy), *args], input=stdin, env=env).returncode
    except OSError as exc:
        _say(f"could not run your chained hook {legacy}: {exc}")
        return 1


def _say(text: str) -> None:
    print(f"pivot: {text}", file=sys.stderr, flush=True)


def _listed(paths: list[str]) -> str:
    more = len(paths) - _LIST_AT_MOST
    return ", ".join(paths[:_LIST_AT_MOST]) + (f" and {more} more" if more > 0 else "")


# pre-commit ----------------------------------------------------------------------------------------


def _pre_commit(root: Path, args: tuple[str, ...], stdin: bytes) -> int:
    from pivot.project import load_project
    from pivot.verify import verify_staged

    if not (root / ".pivot").is_dir():
        return 0  # no Pivot project on this branch: nothing to guard
    try:
        pipeline = load_project(root).config.pipeline
        if pipeline.endswith(".py") and not (root / pipeline).exists():
            return 0  # a project without stages yet
        report = verify_staged(root)
    except PivotError as exc:
        _say(f"cannot check this commit: {exc}")
        _say("fix that, or skip this check once with 'git commit --no-verify'")
        return 1
    if report.ok:
        return 0
    for line in report.lines(limit=_LIST_AT_MOST):
        print(line, file=sys.stderr)
    _say(f"commit refused: {report.summary()}.")
    _say("Run the fixes above (then 'git add' the lock files and metrics), or skip this check once "
         "with 'git commit --no-verify'.")
    return 1


# post-checkout / post-merge --------------------------------------------------------------------


def _post_checkout(root: Path, args: tuple[str, ...], stdin: bytes) -> int:
    previous, new, branch_switch = (args + ("", "", ""))[:3]
    if branch_switch != "1" or previous == new:
        return 0  # a file checkout, or the same commit: outputs already match
    return _post_merge(root, args, stdin)


def _post_merge(root: Path, args: tuple[str, ...], stdin: bytes) -> int:
    try:
        lines = follow_locks(root)
    except Exception as exc:  # a bug must not fail the user's checkout either
        lines = [f"outputs not updated: internal error {type(exc).__name__}: {exc}; run 'pivot checkout'"]
    for line in lines:
        _say(line)
    return 0


def follow_locks(root: Path) -> list[str]:
    """Bring workspace outputs in line with the lock files now checked out, from the cache.
    Never raises for a user problem: the messages say what was not done and how to finish."""
    from pivot.repo import Repo
    from pivot.runlock import ProjectLock

    if not (root / ".pivot").is_dir():
        return []
    try:
        repo = Repo.load(root)
    except PivotError as exc:
        return [f"outputs not updated: {exc}", "fix that, then run 'pivot checkout'"]
    try:
        with ProjectLock(repo.project.pivot_dir, "checkout (git hook)"):
            result, saved = checkout_replacing(repo)
    except PivotError as exc:
        return [f"outputs not updated: {exc}", "then run 'pivot checkout'"]
    finally:
        repo.close()
    return _checkout_messages(repo, result, saved)


def checkout_replacing(repo: Repo) -> tuple[CheckoutResult, list[tuple[str, str]]]:
    """`pivot checkout`, except that an output whose content is in no cache object is first
    saved to the cache and then replaced too: after a branch switch the workspace must follow
    the branch, and nothing may be lost. Returns the result and the (path, hash) saved."""
    from pivot.checkout import CheckoutResult, checkout

    first = checkout(repo)
    if not first.kept:
        return first, []
    saved = [(path, _save_to_cache(repo, path)) for path, _why in first.kept]
    second = checkout(repo)
    return CheckoutResult(first.restored + second.restored, second.missing, second.kept,
                          first.warnings + second.warnings), saved


def _save_to_cache(repo: Repo, path: str) -> str:
    current = repo.hasher.hash_path(path)
    if current is None:
        return ""
    full = repo.root / path
    if current.is_dir:
        for folder, _dirs, names in os.walk(full):
            for name in names:
                repo.cache.add_file(Path(folder) / name)
        assert current.manifest is not None
        return repo.cache.add_bytes(current.manifest)
    return repo.cache.add_file(full)


def _checkout_messages(repo: Repo, result: CheckoutResult, saved: list[tuple[str, str]]) -> list[str]:
    lines = list(result.warnings)
    if result.restored:
        lines.append(f"restored {len(result.restored)} output(s) to match the lock files: {_listed(result.restored)}")
    for path, digest in saved:
        lines.append(f"{path} had changes recorded in no lock file; they were saved in the cache as "
                     f"{repo.cache.path(digest)} before it was replaced")
    if result.missing:
        lines.append(f"{len(result.missing)} output(s) are not in the local cache: {_listed(result.missing)}; "
                     "run 'pivot pull' to fetch them (or 'pivot run' to rebuild them)")
    for path, why in result.kept:
        lines.append(f"{path} was not replaced: {why}; run 'pivot checkout --force' to replace it")
    return lines


# pre-push ---------------------------------------------------------------------------------------


@dataclass
class PushPlan:
    """What the pushed commits need from the cache."""

    commits: list[str] = field(default_factory=list)
    outputs: dict[str, Needed] = field(default_factory=dict)  # hash -> the output that needs it
    objects: set[str] = field(default_factory=set)  # every object: files, manifests, files in folders
    missing: list[str] = field(default_factory=list)  # hashes of outputs not in the local cache


def push_plan(root: Path, remote: str, refs: str) -> PushPlan:
    """Parse the refs git gives a pre-push hook and list the cache objects those commits need."""
    from pivot.cache import Cache
    from pivot.git import parse_push_refs
    from pivot.history import History
    from pivot.project import load_project

    updates = parse_push_refs(refs)
    with History(root) as history:
        commits = history.commits_to_push(updates, remote)
        outputs = history.outputs_needed(commits)
    project = load_project(root)
    cache = Cache(project.cache_dir, project.config.link)
    objects = set(outputs)
    for digest, need in outputs.items():
        if need.is_dir and cache.has(digest):
            objects.update(e.hash for e in cache.read_manifest(digest))
    missing = sorted(d for d in outputs if not cache.has(d))
    return PushPlan(commits, outputs, objects, missing)


def _pre_push(root: Path, args: tuple[str, ...], stdin: bytes) -> int:
    remote = args[0] if args else "origin"
    if not (root / ".pivot").is_dir():
        return 0
    try:
        plan = push_plan(root, remote, stdin.decode(errors="replace"))
    except PivotError as exc:
        _say(f"could not work out which cache objects this push needs: {exc}")
        return 0
    for line in transfer(root, remote, plan):
        _say(line)
    return 0


def transfer(root: Path, remote: str, plan: PushPlan) -> list[str]:
    """Upload what the pushed commits need to the default Pivot remote (`pivot push` of
    `plan.outputs`). A failure is reported, with the command that finishes the job."""
    if not plan.outputs:
        return []
    from pivot.cache import Cache
    from pivot.project import load_project
    from pivot.remote import default_jobs, human, open_storage, push
    from pivot.remote_config import resolve

    lines = [f"the {len(plan.commits)} commit(s) being pushed need {len(plan.objects)} cache object(s) "
             f"for {len(plan.outputs)} output(s)"]
    try:
        project = load_project(root)
        if not project.config.remotes:
            lines[0] += ("; no Pivot remote is configured, so none were uploaded "
                         "(add one with 'pivot remote add NAME URL --default')")
            return lines
        spec = resolve(project.config, None)
        jobs = default_jobs(spec.url)
        result = push(open_storage(spec, project.root, jobs), Cache(project.cache_dir, project.config.link),
                      plan.outputs, jobs)
    except PivotError as exc:
        lines.append(f"could not upload them: {exc}")
        lines.append("fix that, then run 'pivot push --all-branches'")
        return lines
    lines.append(f"uploaded {len(result.done)} object(s) ({human(result.bytes)}) to Pivot remote '{spec.name}'; "
                 f"{result.present} were already there")
    problems = {**result.missing, **result.corrupt}
    if problems:
        lines.append(f"{len(problems)} of them are not in the local cache (or are damaged there), so the remote lacks "
                     f"them: {_listed(sorted(set(problems.values())))}; 'pivot run' rebuilds them")
    return lines


ACTIONS: dict[str, Callable[[Path, tuple[str, ...], bytes], int]] = {
    "pre-commit": _pre_commit,
    "post-checkout": _post_checkout,
    "post-merge": _post_merge,
    "pre-push": _pre_push,
}
