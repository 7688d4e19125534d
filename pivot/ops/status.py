"""pivot status: what `pivot run` would do, and why (changes nothing)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pivot.layout import TRACKED_DIR
from pivot.walk import ahead, ahead_list, keep_ahead_list
from pivot.workspace import Workspace

if TYPE_CHECKING:
    from pivot.planning import Planned
    from pivot.repo import OrphanLock, Repo
    from pivot.verify import TrackedChange


@dataclass(frozen=True)
class StatusPlan:
    planned: list[Planned]
    orphans: list[OrphanLock]  # lock files of stages no longer in the pipeline ('pivot run' removes them)
    remote: str | None = None  # the remote whose holdings were consulted (outputs a clone lacks)
    tracked: list[TrackedChange] = field(default_factory=list)  # tracked data modified or missing ('pivot track')


def plan_stages(stages: tuple[str, ...] = (), ask_remote: bool = False, remote: str | None = None) -> StatusPlan:
    """The plan of `pivot run`. Locked outputs missing here and in the cache are looked for on
    the remote: asked (one batched query) with `ask_remote` or a named `remote`, else, when a
    default remote is configured, from its local index (no network). Tracked data that changed
    is listed too (when no stages are named)."""
    with Workspace.find() as ws:
        # The large folders the last such status walked are walked ahead while the pipeline loads.
        before = [] if stages else ahead_list(ws.root)
        with ahead([os.path.join(ws.root, "") + rel for rel in before]):
            found = _plan(ws, stages, ask_remote, remote)
        if not stages:
            keep_ahead_list(ws.root, ws.repo.hasher.large, before)
        return found


def _plan(ws: Workspace, stages: tuple[str, ...], ask_remote: bool, remote: str | None) -> StatusPlan:
    from pivot import fresh  # lazy: loads the pipeline
    from pivot.ops.run import remote_source
    from pivot.planning import plan
    from pivot.reporter import Reporter
    from pivot.runcache import RunCache

    repo = ws.repo
    tracked = [] if stages else _tracked_changes(repo)
    ask = ask_remote or remote is not None
    source = remote_source(ws, remote, ask, required=ask)  # None: no remote configured
    wanted = fresh.candidates(repo, repo.graph.select(list(stages), False)) if source is not None else {}
    # Stale stages a run record would restore: local records always, the remote's when asked.
    runs = RunCache(repo, Reporter(), source if ask else None)
    if source is None or not (wanted or ask):
        planned = plan(repo, stages, runs=runs)
        repo.remember_cached()
        return StatusPlan(planned, repo.orphan_locks(), tracked=tracked)
    held = fresh.held(source.open(), repo, wanted, source.jobs(), source.ask)
    planned = plan(repo, stages, on_remote=held, runs=runs)
    repo.remember_cached()
    return StatusPlan(planned, repo.orphan_locks(), source.name, tracked)


def _tracked_changes(repo: Repo) -> list[TrackedChange]:
    if not (repo.root / TRACKED_DIR).is_dir():  # nothing tracked ('pivot track' makes the folder)
        return []
    from pivot.verify import tracked_changes  # lazy: only with tracked data (start-up time)

    return tracked_changes(repo)
