"""Finding the project root; a project is its root and its configuration (`pivot.config`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pivot.config import Config, load_config
from pivot.errors import ProjectError
from pivot.layout import CACHE_DIR, PIVOT_DIR, STAGES_DIR, STATE_DB, TMP_DIR


@dataclass(frozen=True)
class Project:
    root: Path
    config: Config

    @property
    def pivot_dir(self) -> Path:
        return self.root / PIVOT_DIR

    @property
    def stages_dir(self) -> Path:
        return self.root / STAGES_DIR

    @property
    def cache_dir(self) -> Path:
        return self.root / CACHE_DIR

    @property
    def tmp_dir(self) -> Path:
        return self.root / TMP_DIR

    @property
    def state_path(self) -> Path:
        return self.root / STATE_DB


def project_relative(root: Path, arg: str, cwd: Path) -> str:
    """A command-line path (relative to `cwd`) as a project-relative POSIX path: "." for the
    root itself, and "../…" when it lies outside (the caller refuses those in its own words)."""
    full = os.path.abspath(os.path.join(cwd, arg))
    rel = os.path.relpath(full, root).replace(os.sep, "/")
    if rel.startswith(".."):  # the working folder is the real path: the root may be spelt through a link
        rel = os.path.relpath(full, os.path.realpath(root)).replace(os.sep, "/")
    return rel


def find_root(start: Path | None = None) -> Path:
    here = Path(os.path.abspath(start or os.getcwd()))
    for folder in (here, *here.parents):
        if (folder / PIVOT_DIR).is_dir():
            return folder
    raise ProjectError(
        f"not inside a Pivot project (no {PIVOT_DIR}/ in {here} or any parent); "
        "run 'pivot init' at the root of your git repository"
    )


def load_project(start: Path | None = None) -> Project:
    root = find_root(start)
    return Project(root=root, config=load_config(root))
