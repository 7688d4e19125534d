"""pivot gc: remove cache (or remote) objects that no kept lock file refers to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pivot.workspace import Workspace

if TYPE_CHECKING:
    from pivot.remote import GcResult


@dataclass(frozen=True)
class Collected:
    where: str  # "the cache" or "remote 'NAME'"
    result: GcResult


def collect_garbage(all_branches: bool, all_commits: bool, dry_run: bool, remote_name: str | None = None,
                    jobs: int | None = None, min_age_minutes: int = 60) -> Collected:
    """Keep what the workspace's lock files need (and every local branch's / commit's with the
    flags); remove the rest from the local cache, or from remote `remote_name`."""
    from pivot.ops.needed import needed_outputs  # lazy: start-up
    from pivot.remote import default_jobs, gc_local, gc_remote  # lazy: start-up

    with Workspace.find() as ws, ws.lock("gc"):
        outputs = needed_outputs(ws.project, (), all_branches, all_commits)
        if remote_name:
            spec = ws.remote(remote_name)
            jobs = jobs or default_jobs(spec.url)
            result = gc_remote(ws.storage(spec, jobs), ws.cache, outputs, jobs, dry_run,
                               min_age=min_age_minutes * 60.0)
            return Collected(f"remote '{spec.name}'", result)
        result = gc_local(ws.cache, outputs, dry_run)
        if not dry_run:
            _forget(ws)
        return Collected("the cache", result)


def _forget(ws: Workspace) -> None:
    """Drop parsed locks no lock file has, and remembered hashes of paths that are gone."""
    from pivot.lock import prune_memo  # lazy: start-up

    prune_memo(ws.project.stages_dir, ws.state)
    ws.state.drop_missing(ws.root)
