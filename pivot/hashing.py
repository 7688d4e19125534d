"""xxh3-128 hashes of files and directories, remembered by (path, size, mtime, inode)."""

from __future__ import annotations

import json
import os
import stat as stat_mod
import time
from pathlib import Path

import xxhash

from pivot.records import DirEntry, FileMemoRow, PathHash
from pivot.state import State

CHUNK = 1024 * 1024
# A hash recorded less than this long after the file's mtime is not trusted later: the
# file may have been rewritten within the file system's timestamp granularity.
RACY_NS = 2_000_000_000


def read_buffer() -> memoryview:
    """A 1 MiB buffer for streaming reads. Anonymous mmap rather than bytearray: a large
    bytearray comes from malloc's mmap path, into which reads measured 3x slower here."""
    import mmap

    return memoryview(mmap.mmap(-1, CHUNK))


def hash_file(path: str | os.PathLike[str]) -> str:
    """The xxh3-128 hex digest of a file's bytes."""
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        if size <= CHUNK:
            return xxhash.xxh3_128_hexdigest(f.read())
        h = xxhash.xxh3_128()
        view = read_buffer()
        while n := f.readinto(view):
            h.update(view[:n])
    return h.hexdigest()


def hasher() -> xxhash.xxh3_128:
    """A streaming hasher of the same digest as hash_file (update(bytes), then hexdigest())."""
    return xxhash.xxh3_128()


def hash_bytes(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def manifest_bytes(entries: list[DirEntry]) -> bytes:
    """The manifest object of a directory: its files' relative paths, hashes and sizes."""
    rows = [{"hash": e.hash, "path": e.path, "size": e.size} for e in sorted(entries, key=lambda e: e.path)]
    return json.dumps(rows, sort_keys=True, separators=(",", ":")).encode()


def parse_manifest(data: bytes) -> list[DirEntry]:
    return [DirEntry(r["path"], r["hash"], r["size"]) for r in json.loads(data)]


def walk_files(root: str) -> list[tuple[str, os.stat_result]]:
    """Every file below root (following symlinks), as (relative POSIX path, stat)."""
    found: list[tuple[str, os.stat_result]] = []
    stack = [("", root)]
    while stack:
        rel, folder = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                st = entry.stat()
                name = f"{rel}{entry.name}"
                if stat_mod.S_ISDIR(st.st_mode):
                    stack.append((name + "/", entry.path))
                else:
                    found.append((name, st))
    found.sort(key=lambda item: item[0])
    return found


class Hasher:
    """Hashes workspace paths (relative to the project root), using the state's memo."""

    def __init__(self, root: Path, state: State) -> None:
        self.root = root
        self.state = state

    def _trusted(self, checked: int, mtime: int) -> bool:
        return checked - mtime >= RACY_NS

    def hash_path(self, rel: str) -> PathHash | None:
        """Hash a file or directory; None when it does not exist."""
        full = os.path.join(self.root, rel)
        try:
            st = os.stat(full)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat_mod.S_ISDIR(st.st_mode):
            return self._hash_dir(rel, full)
        return PathHash(self._hash_one(rel, full, st), is_dir=False)

    def _hash_one(self, rel: str, full: str, st: os.stat_result) -> str:
        row = self.state.get_file(rel)
        if row and (row.size, row.mtime, row.inode) == (st.st_size, st.st_mtime_ns, st.st_ino) \
                and self._trusted(row.checked, row.mtime):
            return row.hash
        digest = hash_file(full)
        self.state.put_files([FileMemoRow(rel, st.st_size, st.st_mtime_ns, st.st_ino, time.time_ns(), digest)])
        return digest

    def remember(self, rel: str, digest: str) -> None:
        """Record the hash of a file we just wrote from a known object."""
        st = os.stat(os.path.join(self.root, rel))
        self.state.put_files([FileMemoRow(rel, st.st_size, st.st_mtime_ns, st.st_ino, time.time_ns(), digest)])

    def _hash_dir(self, rel: str, full: str) -> PathHash:
        files = walk_files(full)
        sig = xxhash.xxh3_128()
        newest = 0
        for name, st in files:
            sig.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\n".encode())
            newest = max(newest, st.st_mtime_ns)
        signature = sig.hexdigest()
        row = self.state.get_dir(rel)
        if row and row.signature == signature and self._trusted(row.checked, newest):
            return PathHash(row.hash, is_dir=True, manifest=row.manifest.encode())
        known = self.state.get_files_under(rel)
        now = time.time_ns()
        entries: list[DirEntry] = []
        fresh: list[FileMemoRow] = []
        for name, st in files:
            key = f"{rel}/{name}"
            row_f = known.get(key)
            if row_f and (row_f.size, row_f.mtime, row_f.inode) == (st.st_size, st.st_mtime_ns, st.st_ino) \
                    and self._trusted(row_f.checked, row_f.mtime):
                digest = row_f.hash
            else:
                digest = hash_file(os.path.join(full, name))
                fresh.append(FileMemoRow(key, st.st_size, st.st_mtime_ns, st.st_ino, now, digest))
            entries.append(DirEntry(name, digest, st.st_size))
        self.state.put_files(fresh)
        manifest = manifest_bytes(entries)
        digest = hash_bytes(manifest)
        self.state.put_dir(rel, signature, now, digest, manifest.decode())
        return PathHash(digest, is_dir=True, manifest=manifest)
