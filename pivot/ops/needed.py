"""Which cached outputs an operation concerns: those the workspace's lock files name (of some
stages, or all, and then the tracked-data records too), and with --all-branches / --all-commits
(or, for gc by default, the history of local branches and tags) those of git history too."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pivot.errors import RemoteError
from pivot.records import NeededOutput, OutputKind

if TYPE_CHECKING:
    from pivot.project import Project


def needed_outputs(project: Project, stages: tuple[str, ...] = (), all_branches: bool = False,
                   all_commits: bool = False, local_history: bool = False) -> dict[str, NeededOutput]:
    """Cached outputs (by hash) of the workspace's lock files (of `stages`, else all, with the
    tracked-data records), and with
    --all-branches / --all-commits of those revisions' lock files too; with `local_history`, of
    every commit reachable from HEAD, local branches and tags."""
    from pivot import lock as lockfile  # lazy: start-up
    from pivot import tracked as trackfile  # lazy: start-up
    from pivot.history import TRACKED, History  # lazy: pygit2 is heavy

    needed: dict[str, NeededOutput] = {}
    names = lockfile.with_variants(project.stages_dir, stages) if stages \
        else lockfile.locked_stages(project.stages_dir)
    for name in names:
        lock = lockfile.read(project.stages_dir, name)
        if lock is None:
            if stages:
                file = lockfile.lock_path(project.stages_dir, name).name
                raise RemoteError(f"stage '{name}' has no lock file ({project.stages_dir.name}/{file}); "
                                  "run it first ('pivot run') or check the name ('pivot list')")
            continue
        for rec in lock.outs:
            if rec.kind != OutputKind.METRIC:
                needed.setdefault(rec.hash, NeededOutput(rec.hash, rec.path, name, rec.is_dir, "workspace"))
    if not stages:
        for t in trackfile.read_all(project.root):
            needed.setdefault(t.hash, NeededOutput(t.hash, t.path, TRACKED, t.is_dir, "workspace"))
    if all_branches or all_commits or local_history:
        history = History(project.root)
        with history:
            commits = history.revisions(all_branches, all_commits, local_history)
            for digest, need in history.outputs_needed(commits).items():
                needed.setdefault(digest, need)
    return needed
