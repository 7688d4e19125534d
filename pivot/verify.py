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
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from pivot.git import WorkTreeChanges
    from pivot.lock import StageLock
    from pivot.repo import Prepared, Repo
    from pivot.run import Planned

LOCKS_DIR = ".pivot/stages"


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


@dataclass
class Report:
    stages: int = 0
    stale: list[StaleStage] = field(default_factory=list)
    metrics: list[FileProblem] = field(default_factory=list)  # workspace metric vs its lock
    staging: list[FileProblem] = field(default_factory=list)  # staged vs workspace (pre-commit)
    absent: list[str] = field(default_factory=list)  # outputs not in this workspace: not a problem
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.stale or self.metrics or self.staging)

    def to_json(self) -> dict[str, Any]:
        def files(items: list[FileProblem]) -> list[dict[str, Any]]:
            return [{"path": f.path, "stage": f.stage, "problem": f.problem, "fix": f.fix} for f in items]

        return {
            "ok": self.ok,
            "stages": self.stages,
            "stale": [{"stage": s.name, "reasons": list(s.reasons), "fix": s.fix} for s in self.stale],
            "metrics": files(self.metrics),
            "staging": files(self.staging),
            "absent_outputs": list(self.absent),
            "notes": list(self.notes),
        }

    def lines(self) -> list[str]:
        """The problems, for a terminal: each with what is wrong and the command that fixes it."""
        out: list[str] = []
        for s in self.stale:
            out.append(f"{s.name}: stale")
            out.extend(f"    - {r}" for r in s.reasons)
            out.append(f"    fix: {s.fix}")
        for f in self.metrics + self.staging:
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
        return ", ".join(parts)


# -- the workspace against its own lock files ----------------------------------------------------


class _AbsentOutputsRestorable:
    """The repo as plan() sees it, except that cached outputs missing from the workspace count as
    restorable: verify asks whether a lock is honest, not whether its data is here. Keeps what
    plan() prepared, so the metric check needs no second read."""

    def __init__(self, repo: Repo) -> None:
        self._repo = repo
        self.prepared: dict[str, Prepared] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)

    def prepare(self, name: str, *args: Any, **kwargs: Any) -> Prepared:
        prep = self._repo.prepare(name, *args, **kwargs)
        cur = prep.current
        absent = frozenset(p for p, (kind, digest) in cur.outs.items() if digest is None and kind != "metric")
        if absent - cur.cached:
            prep.current = replace(cur, cached=cur.cached | absent)
        self.prepared[name] = prep
        return prep


def verify(repo: Repo, targets: tuple[str, ...] = ()) -> Report:
    """Stale stages (with reasons) and metrics whose content does not match their lock."""
    from pivot.run import plan

    view = _AbsentOutputsRestorable(repo)
    planned = plan(cast("Repo", view), targets)
    report = Report(stages=len(planned))
    for p in planned:
        if p.decision.run:
            report.stale.append(StaleStage(p.name, p.decision.reasons, f"pivot run {p.name}"))
        report.absent.extend(r.path for r in p.decision.restore)
        prep = view.prepared.get(p.name)
        if prep is not None and prep.lock is not None:
            report.metrics.extend(_metric_problems(p.name, prep.lock, prep.current.outs))
    return report


def _metric_problems(stage: str, lock: StageLock, current: dict[str, tuple[str, str | None]]) -> list[FileProblem]:
    problems = []
    for rec in lock.outs:
        if rec.kind != "metric" or rec.path not in current:
            continue
        digest = current[rec.path][1]
        if digest is None:
            problems.append(FileProblem(rec.path, "metric is missing; its lock records it",
                                        f"pivot run {stage}, or restore it with 'git checkout -- {rec.path}'", stage))
        elif digest != rec.hash:
            problems.append(FileProblem(rec.path, "metric does not match its lock (edited by hand, or written "
                                        "outside 'pivot run')", f"pivot run {stage}", stage))
    return problems


# -- what is being committed ----------------------------------------------------------------------


def verify_staged(start: Path) -> Report:
    """The pre-commit check: verify the code being committed (unstaged changes are set aside
    while the pipeline is loaded and planned), and require every lock file and metric, and the
    user modules the pipeline imports, to be staged as they are in the workspace."""
    from pivot import git
    from pivot.project import find_root, load_project
    from pivot.repo import Repo

    root = find_root(start)
    top = git.toplevel(root)
    prefix = git.project_prefix(top, root)
    changes = git.worktree_changes(top, prefix)
    with git.unstaged_changes_set_aside(top, prefix, root / ".pivot" / "tmp" / "hooks") as set_aside:
        repo = Repo(load_project(root))
        try:
            report = verify(repo)
            report.staging = staging_problems(repo, changes)
        finally:
            repo.close()
    if set_aside:
        report.notes.append("unstaged changes were set aside while checking, and put back")
    locks = {f.stage: f.fix for f in report.staging if f.path.startswith(LOCKS_DIR + "/")}
    report.stale = [replace(s, fix=locks[s.name]) if s.name in locks else s for s in report.stale]
    return report


def staging_problems(repo: Repo, changes: WorkTreeChanges) -> list[FileProblem]:
    problems: list[FileProblem] = []
    graph = repo.graph
    for name in graph.order:
        _staged_as_in_workspace(repo.root, f"{LOCKS_DIR}/{name}.lock", "lock file", name, changes, problems)
        for out, path in zip(graph.stages[name].outs, graph.outs[name]):
            if out.kind == "metric":
                _staged_as_in_workspace(repo.root, path, "metric", name, changes, problems)
    for path in sorted(_user_modules(repo)) + ["params.yaml"]:
        if changes.is_untracked(path) and (repo.root / path).is_file():
            what = "parameters file" if path == "params.yaml" else "module imported by the pipeline"
            problems.append(FileProblem(path, f"{what}, but not staged: the commit would lack it", f"git add {path}"))
    return problems


def _staged_as_in_workspace(root: Path, path: str, what: str, stage: str, changes: WorkTreeChanges,
                            problems: list[FileProblem]) -> None:
    status = changes.unstaged.get(path)
    if status == "D":
        problems.append(FileProblem(path, f"{what} deleted in the workspace but still staged", f"git add {path}", stage))
    elif status is not None:
        problems.append(FileProblem(path, f"{what} differs from its staged version", f"git add {path}", stage))
    elif changes.is_untracked(path) and (root / path).exists():
        problems.append(FileProblem(path, f"{what} is not staged", f"git add {path}", stage))


def _user_modules(repo: Repo) -> set[str]:
    """Project files of the modules the pipeline imported (a helper left untracked would be
    missing from the commit that records its fingerprint)."""
    is_user = repo.fingerprinter.is_user_file
    pivot_dir = str(repo.root / ".pivot") + os.sep
    found = set()
    for mod in list(sys.modules.values()):
        filename = getattr(mod, "__file__", None)
        if filename and is_user(filename) and not os.path.abspath(filename).startswith(pivot_dir):
            found.add(os.path.relpath(os.path.abspath(filename), repo.root).replace(os.sep, "/"))
    return found


# -- the workspace against another revision's lock files ---------------------------------------------


@dataclass
class RevComparison:
    rev: str
    commit: str
    planned: list[Planned]
    only_at_rev: list[str]  # stages with a lock at REV that the pipeline no longer defines


def compare_with_rev(repo: Repo, rev: str, targets: tuple[str, ...] = ()) -> RevComparison:
    """For each stage, what differs between the lock recorded at `rev` and the workspace now:
    the decision `pivot run` would make if REV's lock files were the current ones. Each stage is
    compared on its own (no 'upstream will run'), so every difference is named where it is."""
    from pivot.git import History
    from pivot.run import Planned
    from pivot.status import Decision, decide

    with History(repo.root) as history:
        commit = str(history.commit(rev).id)
        locks = history.locks_at(commit)
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
                               if r.kind != "metric" and r.path in cur.outs and cur.outs[r.path][1] is None
                               and repo.in_cache(r))
            decision = decide(replace(cur, cached=cached), lock)
        planned.append(Planned(name, decision, prep.current.notes))
    only = sorted(set(locks) - set(repo.graph.stages))
    return RevComparison(rev, commit, planned, only)
