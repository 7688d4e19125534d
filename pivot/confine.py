"""Paths stay inside the project: a path that leads elsewhere through a symbolic link (itself,
or any folder on the way) is refused before Pivot reads or writes through it.

Checked when the graph is built (every dep and output of every stage, before any stage runs),
and again where a stage may have made a link during the run: before its outputs are cached,
and before checkout writes into the workspace.
"""

from __future__ import annotations

import functools
import os
import stat as stat_mod
from collections.abc import Callable, Iterable
from pathlib import Path

from pivot.layout import CACHE_DIR, PIVOT_DIR


class Confinement:
    """Answers "where does this project path really lead?" for one project root, remembering
    the real location of each folder it has resolved (a thousand outputs in one folder cost one
    realpath, not a thousand).

    `listing`: whether a path is a link is answered from one listing of its folder (many paths
    checked in the same folders: status, the graph); False asks the path itself, one lstat (a
    worker checks one stage's outputs in a folder that may hold thousands of files). `recall`:
    asked (folder, how to list it) for a folder's links, it may answer from a listing made by an
    earlier command (pivot/listings.py)."""

    def __init__(self, root: str | Path, listing: bool = True, real: tuple[str, str] | None = None,
                 recall: Callable[[str, Callable[[], frozenset[str]]], frozenset[str]] | None = None) -> None:
        # `real`: the real root and cache folder as `reals` found them (a worker checks each
        # stage's outputs with a new Confinement, and the project does not move between stages).
        self.root, self.cache = real or reals(root)
        self._listing = listing
        self._recall = recall
        self.owned = os.path.join(self.root, PIVOT_DIR)
        self._folders: dict[str, str] = {}
        self._safe_folders: dict[str, bool] = {}  # real folder -> inside the project, outside .pivot/
        self._links: dict[str, frozenset[str]] = {}  # real folder -> names of the links in it

    def _real_folder(self, rel_folder: str) -> str:
        real = self._folders.get(rel_folder)
        if real is None:
            real = self._folders[rel_folder] = _realpath_below(self.root, rel_folder)
        return real

    def _links_in(self, real_folder: str) -> frozenset[str]:
        """The names of the symbolic links in a folder: one listing per folder, rather than one
        lstat per path (a status of a thousand stages checks two thousand paths)."""
        links = self._links.get(real_folder)
        if links is None:
            if self._recall is None:
                links = _links_listed(real_folder)
            else:
                links = self._recall(real_folder, functools.partial(_links_listed, real_folder))
            self._links[real_folder] = links
        return links

    def _is_link(self, real_folder: str, name: str) -> bool:
        if self._listing:
            return name in self._links_in(real_folder)
        return os.path.islink(os.path.join(real_folder, name))

    def problem(self, rel: str) -> str | None:
        """None when `rel` (POSIX, relative to the root) really lies inside the project and outside
        .pivot/, or is itself a link to a cache object; else where it leads."""
        folder, _, name = rel.rpartition("/")
        real_folder = self._real_folder(folder)
        safe = self._safe_folders.get(real_folder)
        if safe is None:
            safe = self._safe_folders[real_folder] = (_within(real_folder, self.root)
                                                      and not _within(real_folder, self.owned))
        if safe and not self._is_link(real_folder, name):
            return None  # the common case: a real folder of the project, and no link
        real = os.path.join(real_folder, name)
        if os.path.islink(real) and _within(real, self.root) and not _within(real, self.owned):
            real = os.path.realpath(real)
            if _within(real, self.cache):
                return None
        if not _within(real, self.root):
            return f"leads outside the project, to {real}, through a symbolic link"
        if _within(real, self.owned):
            return f"leads into {PIVOT_DIR}/ ({real}), which Pivot owns, through a symbolic link"
        return None

    def first_problem(self, paths: Iterable[str]) -> tuple[str, str] | None:
        """The first of `paths` with a `problem`, and the problem; None when they have none. As
        `problem` path by path, with each folder's answer for a name that is no link kept: a
        graph's paths lie in a few folders, so most cost a dictionary lookup."""
        plain: dict[str, frozenset[str] | None] = {}  # folder -> its links when it is safe, else None
        for rel in paths:
            folder, _, name = rel.rpartition("/")
            if folder not in plain:
                real = self._real_folder(folder)
                safe = _within(real, self.root) and not _within(real, self.owned)
                plain[folder] = self._links_in(real) if safe and self._listing else None
            links = plain[folder]
            if links is not None and name not in links:
                continue  # a real folder of the project, and no link: what `problem` says first
            problem = self.problem(rel)
            if problem is not None:
                return rel, problem
        return None

    def escape(self, rel: str) -> tuple[str, str] | None:
        """The first problem of `rel` or, when it is a folder, of any symbolic link below it
        (followed into folders that stay inside): (the path at fault, where it leads); None when
        nothing there leads out. For what a stage produced, or a folder checkout writes into."""
        problem = self.problem(rel)
        if problem is not None:
            return rel, problem
        if not os.path.isdir(os.path.join(self.root, rel)):
            return None  # a file (or a link to one, checked above): nothing below it to follow
        stack = [rel]
        seen: set[str] = set()
        while stack:
            folder = stack.pop()
            real = os.path.realpath(os.path.join(self.root, folder))
            if real in seen:  # a link loop inside the project: walked once
                continue
            seen.add(real)
            try:
                entries = list(os.scandir(real))
            except OSError:  # gone, not a folder, or unreadable: nothing to follow from here
                continue
            for entry in entries:
                child = f"{folder}/{entry.name}"
                if entry.is_symlink():
                    problem = self.problem(child)
                    if problem is not None:
                        return child, problem
                if entry.is_dir():
                    stack.append(child)
        return None


def _links_listed(real_folder: str) -> frozenset[str]:
    try:
        with os.scandir(real_folder) as entries:
            return frozenset(e.name for e in entries if e.is_symlink())
    except OSError:  # missing, not a folder, unreadable: nothing here is a link we can follow
        return frozenset()


def reals(root: str | Path) -> tuple[str, str]:
    """The real location of a project root and of its cache folder. The cache may live elsewhere
    (.pivot/cache a link to another disk); an output that is a link to one of its objects is
    Pivot's own doing (the symlink link mode), not an escape."""
    real = os.path.realpath(root)
    return real, os.path.realpath(os.path.join(real, CACHE_DIR))


def _realpath_below(real_root: str, rel: str) -> str:
    """os.path.realpath(real_root/rel) for a real root: one lstat per component of `rel` rather
    than of the whole path; a link (or anything unusual) on the way is resolved by realpath."""
    path = real_root
    for part in rel.split("/") if rel else ():
        if part in ("", ".", ".."):
            return os.path.realpath(os.path.join(real_root, rel))
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except OSError:
            return os.path.realpath(os.path.join(real_root, rel))
        if not stat_mod.S_ISDIR(st.st_mode):
            return os.path.realpath(os.path.join(real_root, rel))
    return path


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
