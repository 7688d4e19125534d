"""pivot status: what `pivot run` would do, and why (changes nothing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pivot.workspace import Workspace

if TYPE_CHECKING:
    from pivot.run import Planned


def plan_stages(stages: tuple[str, ...] = ()) -> list[Planned]:
    from pivot.run import plan  # lazy: loads the pipeline

    with Workspace.find() as ws:
        return plan(ws.repo, stages)
