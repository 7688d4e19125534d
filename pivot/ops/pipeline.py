"""The pipeline as declared: its stage graph (for `pivot list` and `pivot dag`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pivot.workspace import Workspace

if TYPE_CHECKING:
    from pivot.graph import Graph


def stage_graph() -> Graph:
    """The checked, ordered stage graph, paths resolved (imports the pipeline, changes nothing)."""
    with Workspace.find() as ws:
        return ws.repo.graph
