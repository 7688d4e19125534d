"""pivot status: what `pivot run` would do, and why (changes nothing)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pivot.workspace import Workspace

if TYPE_CHECKING:
    from pivot.ops.track import TrackedChange
    from pivot.repo import OrphanLock
    from pivot.run import Planned


@dataclass(frozen=True)
class StatusPlan:
    planned: list[Planned]
    orphans: list[OrphanLock]  # lock files of stages no longer in the pipeline ('pivot run' removes them)
    tracked: list[TrackedChange]  # tracked data modified or missing in the workspace ('pivot track')


def plan_stages(stages: tuple[str, ...] = ()) -> StatusPlan:
    from pivot.ops.track import changes  # lazy: start-up
    from pivot.run import plan  # lazy: loads the pipeline

    with Workspace.find() as ws:
        repo = ws.repo
        return StatusPlan(plan(repo, stages), repo.orphan_locks(), [] if stages else changes(repo))
