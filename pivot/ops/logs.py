"""pivot logs: what a stage wrote the last time it ran on this machine."""

from __future__ import annotations

from pivot.errors import GraphError, PivotError
from pivot.layout import stage_file
from pivot.workspace import Workspace


def stage_log(stage: str) -> str:
    """The text of `.pivot/logs/<stage>.log`. Without one, the pipeline is loaded to tell an
    unknown stage (a typo) from one that has not run on this machine yet."""
    with Workspace.find() as ws:
        logs = ws.project.pivot_dir / "logs"
        path = logs / stage_file(stage, ".log")
        if path.is_file():
            return path.read_text(errors="replace")
        if stage not in ws.repo.graph.stages:
            raise GraphError(f"unknown stage '{stage}'; run 'pivot list' to see the stages")
        raise PivotError(f"no log for stage '{stage}' in {logs}; it has not run on this machine yet")
