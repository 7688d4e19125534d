"""pivot gc: remove cache (or remote) objects that no kept lock file refers to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from pivot.workspace import Workspace

if TYPE_CHECKING:
    from pivot.remote import GcResult


class Keep(Enum):
    """Which lock files' outputs gc keeps (the workspace's are always kept)."""

    HISTORY = "history"  # the default: every commit reachable from HEAD, local branches and tags
    WORKSPACE = "workspace"  # only the workspace's lock files
    BRANCH_TIPS = "all-branches"  # the last commit of every local branch
    ALL_COMMITS = "all-commits"  # every commit reachable from any ref, remote-tracking ones too


# (where, objects, bytes) about to be removed -> go ahead? It may raise a PivotError to refuse.
Confirm = Callable[[str, int, int], bool]


@dataclass(frozen=True)
class Collected:
    where: str  # "the cache" or "remote 'NAME'"
    result: GcResult


def collect_garbage(keep: Keep, dry_run: bool, remote_name: str | None = None, jobs: int | None = None,
                    min_age_minutes: int = 60, confirm: Confirm | None = None) -> Collected:
    """Keep what the workspace's lock files and those of `keep`'s commits need; remove the rest
    from the local cache, or from remote `remote_name`, once `confirm` agrees (never asked on a
    dry run or when nothing would be removed)."""
    from pivot.ops.needed import needed_outputs  # lazy: start-up
    from pivot.remote import default_jobs, gc_local, gc_remote  # lazy: start-up
    from pivot.runcache import drop_remote_records, gc_records, plan_remote_records  # lazy: start-up

    with Workspace.find() as ws, ws.lock("gc"):
        outputs = needed_outputs(ws.project, (), all_branches=keep is Keep.BRANCH_TIPS,
                                 all_commits=keep is Keep.ALL_COMMITS, local_history=keep is Keep.HISTORY)
        if remote_name:
            spec = ws.remote(remote_name)
            where = f"remote '{spec.name}'"
            jobs = jobs or default_jobs(spec.url)
            storage = ws.storage(spec, jobs)
            records = plan_remote_records(storage, ws.cache.dir, outputs, jobs)
            result = gc_remote(storage, ws.cache, outputs, jobs, dry_run, min_age=min_age_minutes * 60.0,
                               confirm=_asking(confirm, where))
            dry = dry_run or result.declined
            if not dry:
                drop_remote_records(storage, ws.cache.dir, records, jobs)
            _records(result, (len(records.drop), records.kept), dry)
            return Collected(where, result)
        result = gc_local(ws.cache, outputs, dry_run, confirm=_asking(confirm, "the cache"))
        dry = dry_run or result.declined
        _records(result, gc_records(ws.cache.dir, outputs, dry), dry)
        if not dry_run and not result.declined:
            _forget(ws)
        return Collected("the cache", result)


def _records(result: GcResult, counts: tuple[int, int], dry: bool) -> None:
    """Run records go with their outputs: kept when gc keeps them all (docs/run-cache.md)."""
    removed, kept = counts
    if removed:
        did = "would remove" if dry else "removed"
        result.notes.append(f"{did} {removed} run record(s) whose outputs are not kept ({kept} kept)")


def _asking(confirm: Confirm | None, where: str) -> Callable[[int, int], bool] | None:
    if confirm is None:
        return None
    return lambda count, size: confirm(where, count, size)


def _forget(ws: Workspace) -> None:
    """Drop parsed locks no lock file has, and remembered hashes of paths that are gone."""
    from pivot.lock import prune_memo  # lazy: start-up

    prune_memo(ws.project.stages_dir, ws.state)
    ws.state.drop_missing(ws.root)
