"""Backups of a running stage's previous outputs: moved aside before it runs, put back if it
fails, dropped once it is locked, and brought back by the next run after a kill."""

from __future__ import annotations

import fnmatch
import functools
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from pivot.confine import Confinement
from pivot.listings import Listings
from pivot.outputs import Out


def remove_path(path: Path) -> None:
    """Remove a file, link or folder (nothing when absent)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def clear_leftovers(cache_dir: Path, stages_dir: Path, logs_dir: Path, listings: Listings | None = None) -> None:
    """Partial cache objects left by killed workers, half-written lock files and running-log
    markers of a killed run (the caller holds the project lock). `listings`: a folder unchanged
    since a listing found nothing is not listed again (pivot/listings.py)."""
    shutil.rmtree(cache_dir / "tmp", ignore_errors=True)
    for folder, pattern in ((stages_dir, ".*.lock.*.tmp"), (logs_dir, "*.running")):
        find = functools.partial(_matching, folder, pattern)
        for name in find() if listings is None else listings.answer(f"leftovers {pattern}", str(folder), find):
            (folder / name).unlink(missing_ok=True)


def _matching(folder: Path, pattern: str) -> list[str]:
    try:  # names matched as strings, no Path per entry: 10,000 locks and logs on every run
        return fnmatch.filter(os.listdir(folder), pattern)
    except (FileNotFoundError, NotADirectoryError):
        return []


class Backups:
    """One flat folder: a rename in and an unlink out per output, no folders to make or prune."""

    def __init__(self, root: Path, folder: Path) -> None:
        self.root = root
        self.folder = folder

    def path(self, stage: str, path: str) -> Path:
        return self.folder / f"{stage}@{path.replace('%', '%25').replace('/', '%2F')}"

    def move_aside(self, stage: str, outs: tuple[Out, ...]) -> list[str]:
        """Move previous outputs to the backup folder; an IncrementalOut is copied, as the stage
        starts from it."""
        moved: list[str] = []
        for o in outs:
            p = o.path
            src = self.root / p
            if os.path.lexists(src):
                dest = self.path(stage, p)
                if not moved:
                    self.folder.mkdir(parents=True, exist_ok=True)
                remove_path(dest)
                if not o.incremental:
                    os.replace(src, dest)
                elif src.is_dir():
                    shutil.copytree(src, dest, symlinks=True)
                else:
                    shutil.copy2(src, dest)
                moved.append(p)
        return moved

    def roll_back(self, stage: str, outs: tuple[Out, ...], backups: list[str]) -> None:
        """Remove what a failed stage wrote and put the previous outputs back; never through a
        link the stage made to somewhere outside the project (what it wrote there is left, and the
        previous version stays in the cache)."""
        confinement = Confinement(self.root)
        for o in outs:
            if confinement.problem(o.path) is None:
                remove_path(self.root / o.path)
        for p in backups:
            src = self.path(stage, p)
            if os.path.lexists(src) and confinement.problem(p) is None:
                (self.root / p).parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, self.root / p)

    def drop(self, stage: str, backups: list[str]) -> None:
        for p in backups:
            remove_path(self.path(stage, p))

    def recover(self, outs_by_stage: Mapping[str, Iterable[str]]) -> None:
        """Outputs moved aside by a run that was killed come back where nothing replaced them."""
        if not self.folder.is_dir():
            return
        for name, outs in outs_by_stage.items():
            for p in outs:
                src = self.path(name, p)
                if os.path.lexists(src) and not os.path.lexists(self.root / p):
                    (self.root / p).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(src, self.root / p)
        remove_path(self.folder)
