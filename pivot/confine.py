"""Paths stay inside the project: a path that leads elsewhere through a symbolic link (itself,
or any folder on the way) is refused before Pivot reads or writes through it.

Checked when the graph is built (every dep and output of every stage, before any stage runs),
and again where a stage may have made a link during the run: before its outputs are cached,
and before checkout writes into the workspace.
"""

from __future__ import annotations

import os
from pathlib import Path

from pivot.layout import PIVOT_DIR


class Confinement:
    """Answers "where does this project path really lead?" for one project root, remembering
    the real location of each folder it has resolved (a thousand outputs in one folder cost one
    realpath, not a thousand)."""

    def __init__(self, root: str | Path) -> None:
        self.root = os.path.realpath(root)
        self.owned = os.path.join(self.root, PIVOT_DIR)
        self._folders: dict[str, str] = {}

    def _real_folder(self, rel_folder: str) -> str:
        real = self._folders.get(rel_folder)
        if real is None:
            real = self._folders[rel_folder] = os.path.realpath(os.path.join(self.root, rel_folder))
        return real

    def leads_to(self, rel: str) -> str:
        """The real absolute location of project path `rel` (POSIX, relative to the root)."""
        folder, name = os.path.split(rel)
        full = os.path.join(self._real_folder(folder), name)
        return os.path.realpath(full) if os.path.islink(full) else full

    def problem(self, rel: str) -> str | None:
        """None when `rel` really lies inside the project and outside .pivot/; else where it leads."""
        real = self.leads_to(rel)
        if not _within(real, self.root):
            return f"leads outside the project, to {real}, through a symbolic link"
        if _within(real, self.owned):
            return f"leads into {PIVOT_DIR}/ ({real}), which Pivot owns, through a symbolic link"
        return None


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
