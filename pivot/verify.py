"""Are the lock files honest? `pivot verify`, the pre-commit check, and `pivot status --rev`.

A lock is honest when `pivot run` would not run its stage: same code, params, deps and outputs.
One difference from `pivot status`: an output that is simply not in this workspace (a fresh
clone, a CI job without the cache) does not make its lock dishonest, so verify treats absent
cached outputs as restorable. A metric is committed to git, so a missing or edited metric does.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pivot.errors import PivotError
from pivot.layout import (
    CONFIG,
    CONFIG_LOCAL,
    LOCK_SUFFIX,
    PARAMS_FILE,
    PIVOT_DIR,
    STAGES_DIR,
    TMP_DIR,
    TRACKED_DIR,
    TRACKED_SUFFIX,
    stage_file,
    stage_of_file,
)
from pivot.records import OutputKind

if TYPE_CHECKING:
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


def verify(repo: Repo, targets: tuple[str, ...] = (), remember: bool = True) -> Report:
    """Stale stages (with reasons) and metrics whose content does not match their lock. Decided
    with Policy.VERIFY: cached outputs missing from the workspace count as restorable. With
    `remember` (and no targets), a clean result is memoised for the pre-commit check."""
    from pivot.planning import plan
    from pivot.status import Policy

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
    if not targets and remember:
        if report.ok and not modified:
            _record_memo(repo)
        else:
            repo.state.put_json(_MEMO_KEY, None)
    return report


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


@dataclass(frozen=True)
class Staging:
    """What the staging checks need from the pipeline (kept in the memo, so a memo hit needs no import)."""

    stages: list[str]
    metrics: list[tuple[str, str]]  # (stage, path)
    modules: list[str]  # project files of the modules the pipeline imported

    @classmethod
    def of(cls, repo: Repo) -> Staging:
        g = repo.graph
        metrics = [(n, o.path) for n in g.order for o in g.stages[n].outs if o.kind is OutputKind.METRIC]
        return cls(list(g.order), metrics, sorted(_user_modules(repo)))


def verify_staged(start: Path) -> Report:
    """The pre-commit check: verify the code being committed (unstaged changes are set aside
    while the pipeline is loaded and planned), and require every lock file and metric, and the
    user modules the pipeline imports, to be staged as they are in the workspace."""
    from pivot import git
    from pivot.project import find_root, load_project

    root = find_root(start)
    top = git.toplevel(root)
    prefix = git.project_prefix(top, root)
    changes = git.worktree_changes(top, prefix)
    pending = _unstaged_locks(root, changes)
    records = _unstaged_records(root, changes)
    with git.unstaged_changes_set_aside(top, prefix, root / TMP_DIR / "hooks") as set_aside:
        project = load_project(root)
        staging: Staging | None = _memo_hit(project.root, project.state_path)
        if staging is not None:
            report = Report(stages=len(staging.stages))
            report.notes.append("nothing the check reads changed since the last full check")
        else:
            from pivot.repo import Repo  # imports the heavy parts: only when the full check runs

            repo = Repo(project)
            try:
                report, staging = verify(repo), Staging.of(repo)
                if pending and not report.ok:
                    report = _as_if_added(repo, report, pending)
                if records and report.tracked:
                    report.tracked = _tracked_as_if_added(repo, report.tracked, records)
            finally:
                repo.close()
    report.staging = staging_problems(root, staging, changes)
    if set_aside:
        report.notes.append("unstaged changes were set aside while checking, and put back")
    if not pending:
        locks = {f.stage: f.fix for f in report.staging if f.path.startswith(LOCKS_DIR + "/")}
        report.stale = [replace(s, fix=locks[s.name]) if s.name in locks else s for s in report.stale]
    return report


def _unstaged_locks(root: Path, changes: WorkTreeChanges) -> dict[str, bytes]:
    """The workspace's bytes of the lock files that are modified or new but not staged, by stage."""
    found: dict[str, bytes] = {}
    for path in sorted((root / LOCKS_DIR).glob(f"*{LOCK_SUFFIX}")):
        rel = f"{LOCKS_DIR}/{path.name}"
        stage = stage_of_file(path.name, LOCK_SUFFIX)
        if stage is not None and (changes.unstaged.get(rel) not in (None, "D") or changes.is_untracked(rel)):
            try:
                found[stage] = path.read_bytes()
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


def _user_modules(repo: Repo) -> set[str]:
    """Project files of the modules the pipeline imported (a helper left untracked would be
    missing from the commit that records its fingerprint)."""
    is_user = repo.fingerprinter.is_user_file
    pivot_dir = str(repo.root / PIVOT_DIR) + os.sep
    found = set()
    for mod in list(sys.modules.values()):
        filename = getattr(mod, "__file__", None)
        if filename and is_user(filename) and not os.path.abspath(filename).startswith(pivot_dir):
            found.add(os.path.relpath(os.path.abspath(filename), repo.root).replace(os.sep, "/"))
    return found


# -- the memo: skip the full check when nothing it reads has changed -------------------------------
#
# After a clean full check of every stage, the (size, mtime, ctime, inode) of everything the
# decision reads is recorded: lock files, config, params.yaml, the pipeline's own modules and
# their folders, every dep and output (folders walked), and the interpreter with its sys.path
# folders (installing a package changes them). The pre-commit check skips importing and planning
# only when all of these are unchanged; ctime moves on any write, even one that restores mtime.
# Not covered: a module-level constant computed from the environment or from a file that is not
# a dep; `pivot verify` (and CI) always do the full check.

_MEMO_KEY = "verify-memo"
_MEMO_SCHEMA = 1


@dataclass(frozen=True)
class _Memo(Staging):
    digest: str = ""
    stat_paths: tuple[str, ...] = ()  # stat the path itself
    tree_paths: tuple[str, ...] = ()  # stat every file below a folder


def _environment(root: Path) -> str:
    """The interpreter and import path (without the project root, which loading a pipeline adds)."""
    from pivot.version import __version__

    paths = [p for p in sys.path if os.path.abspath(p or ".") != str(root)]
    return "\n".join([f"memo {_MEMO_SCHEMA}", __version__, sys.version, sys.executable, *paths])


def _signature(root: Path, stat_paths: tuple[str, ...], tree_paths: tuple[str, ...], record: bool) -> str | None:
    """A digest of the stats of those paths; None when recording and a file is too recent to
    trust (it could change again within the file system's timestamp granularity)."""
    import time

    import xxhash

    from pivot.hashing import RACY_NS

    h = xxhash.xxh3_128(_environment(root).encode())
    too_new = time.time_ns() - RACY_NS
    for kind, paths in (("s", stat_paths), ("t", tree_paths)):
        for rel in paths:
            for name, st in _stats(os.path.join(root, rel), deep=kind == "t"):
                if st is not None and record and max(st.st_mtime_ns, st.st_ctime_ns) > too_new:
                    return None
                row = "-" if st is None else f"{st.st_mode}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
                h.update(f"{kind}:{rel}/{name}\0{row}\n".encode())
    return h.hexdigest()


def _stats(path: str, deep: bool) -> list[tuple[str, os.stat_result | None]]:
    import stat as stat_mod

    try:
        st = os.stat(path)
    except OSError:
        return [("", None)]
    if not deep or not stat_mod.S_ISDIR(st.st_mode):
        return [("", st)]
    found: list[tuple[str, os.stat_result | None]] = [("", st)]
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        rel = os.path.relpath(folder, path)
        for name in [*sorted(dirs), *sorted(files)]:
            try:
                found.append((f"{rel}/{name}", os.stat(os.path.join(folder, name))))
            except OSError:
                found.append((f"{rel}/{name}", None))
    return found


def _record_memo(repo: Repo) -> None:
    from pivot import tracked

    staging = Staging.of(repo)
    g = repo.graph
    folders = sorted({os.path.dirname(m) or "." for m in staging.modules})
    outside = [p for p in sys.path if p and os.path.isdir(p) and not p.startswith(str(repo.root))]
    stat_paths = (CONFIG, CONFIG_LOCAL, PARAMS_FILE, *staging.modules, *folders,
                  *outside)
    data = {p for n in g.order for p in (*g.deps[n], *g.outs[n])} | set(tracked.paths(repo.root))
    tree_paths = (LOCKS_DIR, TRACKED_DIR, *sorted(data))
    digest = _signature(repo.root, stat_paths, tree_paths, record=True)
    if digest is None:
        repo.state.put_json(_MEMO_KEY, None)
        return
    repo.state.put_json(_MEMO_KEY, {
        "digest": digest, "stages": staging.stages, "metrics": staging.metrics, "modules": staging.modules,
        "stat_paths": list(stat_paths), "tree_paths": list(tree_paths),
    })


def _memo_hit(root: Path, state_path: Path) -> _Memo | None:
    from pivot.state import State

    if not state_path.exists():
        return None
    state = State(state_path)
    try:
        data = state.get_json(_MEMO_KEY)
    finally:
        state.close()
    if not data:
        return None
    memo = _Memo(data["stages"], [tuple(m) for m in data["metrics"]], data["modules"], data["digest"],
                 tuple(data["stat_paths"]), tuple(data["tree_paths"]))
    return memo if _signature(root, memo.stat_paths, memo.tree_paths, record=False) == memo.digest else None


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
