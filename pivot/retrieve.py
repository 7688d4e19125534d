"""`pivot get`: the content of a stage output or tracked path as of a git revision, written to a
destination that Pivot does not manage.

Finding: the lock files and tracked-data records of that revision (`pivot.history`) name the
path itself, or a directory that holds it (then the directory's manifest names the file or
subfolder). Writing: every file is copied out of the cache and hashed on the way, into a
temporary name beside the destination, which is renamed into place only when everything
matched; a mismatch leaves nothing behind and names the damaged objects, for the caller to fetch
good copies. Nothing here changes the workspace, the lock files or the cache.
"""

from __future__ import annotations

import difflib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pivot.atomic import interrupts_deferred
from pivot.cache import Cache, copy_hashing, unlink_quiet
from pivot.errors import GetError
from pivot.hashing import hash_bytes, parse_manifest
from pivot.history import History
from pivot.records import DirEntry, PathRecord, is_digest

TEMP_MARK = ".pivot-get"  # in the names of the temporaries beside a destination


@dataclass(frozen=True)
class Located:
    """Where a revision records `path`: in `record` (a stage output or tracked data, named by
    `owner`), the record itself when `inner` is "", else the file or folder `inner` inside it."""

    path: str
    owner: str  # "stage 'NAME'" or "tracked data"
    record: PathRecord
    inner: str = ""
    blob: bytes | None = None  # a metric (committed to git, not cached): its bytes at the revision


@dataclass(frozen=True)
class Content:
    """What a destination receives: one file (`files[0]`, path "") or a folder of files."""

    is_dir: bool
    files: list[DirEntry]

    @property
    def size(self) -> int:
        return sum(max(e.size, 0) for e in self.files)


def recorded_paths(history: History, commit: Any) -> dict[str, tuple[str, PathRecord]]:
    """Every output and tracked path the revision records: path -> (owner, record)."""
    found: dict[str, tuple[str, PathRecord]] = {}
    for stage, lock in sorted(history.locks_of(commit).items()):
        for rec in lock.outs:
            found.setdefault(rec.path, (f"stage '{stage}'", rec))
    for t in history.tracked_of(commit):
        found.setdefault(t.path, ("tracked data", t.record))
    return found


def locate(history: History, commit: Any, rev: str, rel: str) -> Located:
    """The record at `commit` that holds `rel`, or a refusal that names what the revision has."""
    found = recorded_paths(history, commit)
    if rel in found:
        owner, rec = found[rel]
        if rec.cached:
            return Located(rel, owner, rec)
        blob = history.read_blob(str(commit.id), rel)
        if blob is None:
            raise GetError(f"metric '{rel}' ({owner}) is in its lock at {rev} but was not committed to git "
                           "there; get it from a revision that committed it")
        if hash_bytes(blob) != rec.hash:
            raise GetError(f"metric '{rel}' ({owner}) as committed at {rev} does not match its lock there "
                           f"(edited by hand); read it with 'git show {rev}:{rel}'")
        return Located(rel, owner, rec, blob=blob)
    for path, (owner, rec) in sorted(found.items()):
        if rec.is_dir and rel.startswith(path + "/"):
            return Located(rel, owner, rec, inner=rel[len(path) + 1:])
    raise GetError(_not_recorded(rel, rev, str(commit.id), sorted(found)))


def _not_recorded(rel: str, rev: str, sha: str, paths: list[str]) -> str:
    where = f"at {rev} ({sha[:10]})"
    if not paths:
        return (f"'{rel}' is not a stage output or tracked path {where}: that revision records none; "
                "try a later revision (see 'git log --oneline')")
    close = difflib.get_close_matches(rel, paths, n=3, cutoff=0.5)
    if close:
        hint = "did you mean " + " or ".join(f"'{p}'" for p in close) + "?"
    else:
        shown = ", ".join(paths[:8]) + (f" (+{len(paths) - 8} more)" if len(paths) > 8 else "")
        hint = f"it records: {shown}"
    return f"'{rel}' is not a stage output or tracked path {where}; {hint}"


def manifest(cache: Cache, digest: str) -> list[DirEntry] | None:
    """A directory's manifest from the cache, verified; None when absent or damaged."""
    try:
        data = cache.path(digest).read_bytes()
    except FileNotFoundError:
        return None
    if hash_bytes(data) != digest:
        return None
    try:
        return parse_manifest(data)
    except (ValueError, KeyError, TypeError):
        return None


def content(located: Located, entries: list[DirEntry] | None, rev: str) -> Content:
    """What `located` holds; `entries`: the manifest of its record when that is a directory."""
    rec = located.record
    if entries is None:
        return Content(False, [DirEntry("", rec.hash, -1)])
    for e in entries:
        parts = e.path.split("/") if isinstance(e.path, str) else [""]
        if any(p in ("", ".", "..") for p in parts) or "\\" in e.path or not is_digest(e.hash) \
                or not isinstance(e.size, int):
            raise GetError(f"directory '{rec.path}' ({located.owner}) at {rev} has a manifest naming "
                           f"{e.path!r}, which is not a safe relative path with a hash; nothing was written")
    inner = located.inner
    if not inner:
        return Content(True, entries)
    for e in entries:
        if e.path == inner:
            return Content(False, [DirEntry("", e.hash, e.size)])
    below = [DirEntry(e.path[len(inner) + 1:], e.hash, e.size) for e in entries if e.path.startswith(inner + "/")]
    if below:
        return Content(True, below)
    names = sorted({e.path.split("/")[0] for e in entries})
    shown = ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")
    raise GetError(f"'{located.path}' is not in directory '{rec.path}' ({located.owner}) at {rev}; "
                   f"it holds: {shown or 'nothing'}")


# -- writing the destination ----------------------------------------------------------------------


def _temporary(dest: Path, what: str) -> Path:
    return dest.parent / f".{dest.name}{TEMP_MARK}-{what}.{os.getpid()}"


def write(cache: Cache, got: Content, dest: Path, replace: bool) -> list[str]:
    """Copy `got` out of the cache to `dest`, every file hashed on the way. Returns the hashes of
    objects that are absent or whose bytes do not match (then nothing was written)."""
    tmp = _temporary(dest, "new")
    bad: list[str] = []
    try:
        if got.is_dir:
            os.mkdir(tmp)
            made: set[str] = set()
            for e in got.files:
                folder = os.path.dirname(e.path)
                if folder and folder not in made:
                    os.makedirs(tmp / folder, exist_ok=True)
                    made.add(folder)
                if not _copy(cache, e.hash, tmp / e.path):
                    bad.append(e.hash)
        elif not _copy(cache, got.files[0].hash, tmp):
            bad.append(got.files[0].hash)
        if not bad:
            swap(tmp, dest, replace)
    except BaseException:
        remove(tmp)
        raise
    remove(tmp)
    return sorted(set(bad))


def write_bytes(data: bytes, dest: Path, replace: bool) -> None:
    """`dest` becomes a file holding `data` (a metric from git)."""
    tmp = _temporary(dest, "new")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        swap(tmp, dest, replace)
    except BaseException:
        remove(tmp)
        raise


def _copy(cache: Cache, digest: str, target: Path) -> bool:
    """Copy object `digest` to the new file `target`; False when it is absent or not what its
    name says."""
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        unlink_quiet(target)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        actual = copy_hashing(str(cache.path(digest)), fd)
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)
    return actual == digest


def swap(tmp: Path, dest: Path, replace: bool) -> None:
    """Put the finished `tmp` at `dest`. An existing `dest` (allowed by `replace`) is moved aside
    first and removed only once the new one is in place; if that fails, it is put back."""
    with interrupts_deferred():
        if not os.path.lexists(dest):
            os.rename(tmp, dest)
            return
        if not replace:
            raise GetError(f"'{dest}' appeared while it was being written; nothing was replaced")
        if not tmp.is_dir() and not (dest.is_dir() and not dest.is_symlink()):
            os.replace(tmp, dest)
            return
        old = _temporary(dest, "old")
        os.rename(dest, old)
        try:
            os.rename(tmp, dest)
        except BaseException:
            os.rename(old, dest)
            raise
        remove(old)


def remove(path: Path) -> None:
    """Remove a file, symlink or folder; nothing when absent."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        unlink_quiet(path)
