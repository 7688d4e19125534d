"""plots show/diff: the Plot outputs of the workspace and of git revisions."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pivot.workspace import Workspace

if TYPE_CHECKING:
    from pivot.history import History


@dataclass(frozen=True)
class Collected:
    root: Path
    views: list[Any]  # pivot.plots views, one per Plot output
    revisions: list[Any]  # pivot.plots revisions, in the order given


def collect_plots(names: list[str]) -> Collected:
    """Read every Plot output at each of `names` (git revisions, or 'workspace')."""
    from pivot import plots  # lazy: start-up
    from pivot.history import History

    with Workspace.find() as ws:
        repo = ws.repo
        needs_git = any(n != plots.WORKSPACE for n in names)
        history: History | None = History(repo.root) if needs_git else None
        with history if history is not None else nullcontext():
            revisions = plots.resolve(history, names)
            views = plots.collect(repo.root, repo.cache, plots.definitions(repo.graph), revisions, history)
        return Collected(repo.root, list(views), list(revisions))
