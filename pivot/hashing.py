"""xxh3-128 hashes of files and directories, remembered by (path, size, mtime, inode).

A folder is remembered whole: one walk of it (`scan`: a stat per entry and no other per-file
work) gives a signature of every file's path, size, mtime, inode and mode, and when that matches
the state's, the folder's hash is the remembered one. Otherwise its files, sorted by path, are
compared in chunks of FOLDER_CHUNK with the remembered chunks (each also by signature): only the
files of chunks that differ are looked up, only files that differ are read, and only those
chunks are written back. The manifest, and so the hash, is the same as hashing every file.
"""

from __future__ import annotations

import gc
import json
import marshal
import os
import stat as stat_mod
import time
from functools import partial
from json.encoder import encode_basestring_ascii as json_str
from operator import itemgetter
from pathlib import Path

import xxhash

from pivot.errors import StateError
from pivot.records import DirEntry, FileMemo, FileMemoRow, FolderChunk, FolderMemo, PathHash
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


def hash_sized(path: str, size: int) -> str:
    """hash_file of a file whose size a walk just found: a small file in one read, without the
    file object (a third of the cost of hashing 100,000 small files). If the size is no longer
    right, the file is read again as hash_file reads it."""
    if size > CHUNK:
        return hash_file(path)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, size + 1)
        if len(data) == size and not os.read(fd, 1):
            return xxhash.xxh3_128_hexdigest(data)
    finally:
        os.close(fd)
    return hash_file(path)


def hasher() -> xxhash.xxh3_128:
    """A streaming hasher of the same digest as hash_file (update(bytes), then hexdigest())."""
    return xxhash.xxh3_128()


def hash_bytes(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def manifest_bytes(entries: list[DirEntry]) -> bytes:
    """The manifest object of a directory: its files' relative paths, hashes and sizes, as
    `json.dumps([{"hash", "path", "size"}...], sort_keys=True, separators=(",", ":"))` of the
    entries sorted by path would write it (tests/test_bigdir.py checks that), only faster."""
    return b"[" + manifest_text([(e.path, e.hash, e.size) for e in sorted(entries, key=lambda e: e.path)]) + b"]"


def manifest_text(items: list[tuple[str, str, int]]) -> bytes:
    """The entries (path, hash, size), in the order given, of a manifest without its brackets."""
    return ",".join([f'{{"hash":{json_str(h)},"path":{json_str(p)},"size":{n}}}' for p, h, n in items]).encode()


def parse_manifest(data: bytes) -> list[DirEntry]:
    return [DirEntry(r["path"], r["hash"], r["size"]) for r in json.loads(data)]


def _pieces(manifest: bytes) -> set[bytes] | None:
    """A manifest as written by manifest_bytes, cut between entries (a cut inside a path that
    holds '},{' gives pieces that do not parse, which sends changed_entries to the slow way)."""
    if manifest == b"[]":
        return set()
    if not (manifest.startswith(b"[{") and manifest.endswith(b"}]")):
        return None
    return set(manifest[2:-2].split(b"},{"))


def _piece_entry(piece: bytes) -> DirEntry:
    r = json.loads(b"{" + piece + b"}")
    if not isinstance(r["path"], str) or not isinstance(r["hash"], str) or not isinstance(r["size"], int):
        raise TypeError("not a manifest entry")
    return DirEntry(r["path"], r["hash"], r["size"])


def changed_entries(manifest: bytes, other: bytes) -> tuple[list[DirEntry], list[DirEntry]]:
    """The entries of `manifest` that `other` lacks, and those of `other` that `manifest` lacks:
    a file whose content differs is in both. Parses only the entries that differ when both are
    written as manifest_bytes writes them (the case that matters: one file of 100,000 changed)."""
    mine, theirs = _pieces(manifest), _pieces(other)
    if mine is not None and theirs is not None:
        try:
            return [_piece_entry(p) for p in mine - theirs], [_piece_entry(p) for p in theirs - mine]
        except (ValueError, KeyError, TypeError):
            pass
    a, b = set(parse_manifest(manifest)), set(parse_manifest(other))
    return list(a - b), list(b - a)


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


# A file as `scan` finds it: path below the folder, size, mtime (ns), inode, mode.
Row = tuple[str, int, int, int, int]
FOLDER_CHUNK = 1024
_DIR_BITS = stat_mod.S_IFDIR


def scan(root: str) -> list[Row]:
    """Every file below root (following symlinks, like walk_files), in the order the file system
    lists them. One stat per entry and nothing else per file: this is the floor of a status."""
    found: list[Row] = []
    stack = [""]
    collecting = gc.isenabled()
    gc.disable()  # 100,000 new tuples would start needless collections of everything alive
    try:
        while stack:
            rel = stack.pop()
            with os.scandir(os.path.join(root, rel)) as it:
                rows = [(rel + e.name, s.st_size, s.st_mtime_ns, s.st_ino, s.st_mode) for e in it for s in (e.stat(),)]
            subdirs = [r[0] + "/" for r in rows if stat_mod.S_IFMT(r[4]) == _DIR_BITS]
            if subdirs:
                stack.extend(subdirs)
                rows = [r for r in rows if stat_mod.S_IFMT(r[4]) != _DIR_BITS]
            found.extend(rows)
    finally:
        if collecting:
            gc.enable()
    return found


def signature(rows: list[Row]) -> str:
    """The hash of walk rows. marshal version 2 writes the same bytes for equal values."""
    return xxhash.xxh3_128_hexdigest(marshal.dumps(rows, 2))


def _sums(data: bytes, text: bytes) -> str:
    return xxhash.xxh3_64_hexdigest(data) + xxhash.xxh3_64_hexdigest(text)


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

    # -- folders -----------------------------------------------------------
    def _hash_dir(self, rel: str, full: str) -> PathHash:
        rows = scan(full)
        sig = signature(rows)
        memo = self.state.get_folder(rel)
        if memo and memo.signature == sig and self._trusted(memo.checked, max([r[2] for r in rows], default=0)):
            return PathHash(memo.hash, is_dir=True, load=partial(self._remembered_manifest, rel, memo.hash))
        return self._refresh(rel, full, rows, sig, memo)

    def _remembered_manifest(self, rel: str, digest: str) -> bytes:
        """The manifest of folder `rel` whose hash was found remembered as `digest`."""
        index = self._index(rel)
        if index is not None:
            idxs = list(range(len(index)))
            texts = self.state.get_folder_texts(rel, idxs)
            if all(i in texts and texts[i][1].endswith(xxhash.xxh3_64_hexdigest(texts[i][0])) for i in idxs):
                manifest = b"[" + b",".join(texts[i][0] for i in idxs) + b"]"
                if hash_bytes(manifest) == digest:
                    return manifest
        # damaged, or changed by another process since: hash it again (from what is intact)
        full = os.path.join(self.root, rel)
        rows = scan(full)
        found = self._refresh(rel, full, rows, signature(rows), self.state.get_folder(rel))
        if found.hash != digest or found.given is None:
            raise StateError(f"'{rel}' changed while Pivot was reading it; run the command again")
        return found.given

    def _index(self, rel: str) -> list[tuple[str, str, str]] | None:
        """The remembered chunks of folder `rel`: (signature, first path, last path) of each."""
        stored = self.state.get_folder_index(rel)
        if stored is None or xxhash.xxh3_64_hexdigest(stored[0]) != stored[1]:
            return None
        try:
            index = marshal.loads(stored[0])
        except (ValueError, EOFError, TypeError):
            return None
        return index if isinstance(index, list) else None

    def _refresh(self, rel: str, full: str, rows: list[Row], sig: str, memo: FolderMemo | None) -> PathHash:
        """Hash a folder whose walk differs from the remembered one (or that was never seen),
        reading only the files that differ, and remember it."""
        now = time.time_ns()
        rows.sort(key=itemgetter(0))
        chunks = [rows[i:i + FOLDER_CHUNK] for i in range(0, len(rows), FOLDER_CHUNK)]
        sigs = [signature(c) for c in chunks]
        old = self._index(rel) if memo is not None else None
        limit = memo.checked - RACY_NS if memo is not None else 0
        same = [i for i, c in enumerate(chunks) if old is not None and i < len(old) and old[i][0] == sigs[i]
                and max([r[2] for r in c]) <= limit]
        texts = self.state.get_folder_texts(rel, same) if same else {}
        kept = {i: t for i, (t, sums) in texts.items() if sums.endswith(xxhash.xxh3_64_hexdigest(t))}
        redo = [i for i in range(len(chunks)) if i not in kept]
        known, files = self._known(rel, [chunks[i] for i in redo], old or [], limit)
        written: dict[int, FolderChunk] = {}
        for i in redo:
            chunk = chunks[i]
            hashes = self._chunk_hashes(full, rel, chunk, known, files)
            data = marshal.dumps((chunk, hashes), 2)
            text = manifest_text([(r[0], h, r[1]) for r, h in zip(chunk, hashes, strict=True)])
            written[i] = FolderChunk(data, text, _sums(data, text))
            kept[i] = text
        manifest = b"[" + b",".join(kept[i] for i in range(len(chunks))) + b"]"
        digest = hash_bytes(manifest)
        index = marshal.dumps([(s, c[0][0], c[-1][0]) for s, c in zip(sigs, chunks, strict=True)], 2)
        self.state.put_folder(rel, FolderMemo(sig, now, digest), (index, xxhash.xxh3_64_hexdigest(index)),
                              written, len(chunks))
        return PathHash(digest, is_dir=True, given=manifest)

    def _known(self, rel: str, todo: list[list[Row]], old: list[tuple[str, str, str]],
               limit: int) -> tuple[dict[Row, str], dict[str, FileMemo]]:
        """What is remembered of the files of chunks `todo`: the hashes of walk rows from the
        remembered chunks that cover their paths (only rows older than `limit`), or, for a
        folder never remembered as a whole, the file memo's rows below it."""
        if not todo:
            return {}, {}
        if not old:
            return {}, self.state.get_files_under(rel)
        wanted = sorted({j for c in todo for j, (_s, first, last) in enumerate(old)
                         if first <= c[-1][0] and last >= c[0][0]})
        known: dict[Row, str] = {}
        for chunk in self.state.get_folder_chunks(rel, wanted).values():
            if not chunk.sums.startswith(xxhash.xxh3_64_hexdigest(chunk.data)):
                continue
            try:
                found, hashes = marshal.loads(chunk.data)
            except (ValueError, EOFError, TypeError):
                continue
            known.update((r, h) for r, h in zip(found, hashes, strict=True) if r[2] <= limit)
        return known, {}

    def _chunk_hashes(self, full: str, rel: str, chunk: list[Row], known: dict[Row, str],
                      files: dict[str, FileMemo]) -> list[str]:
        """The hash of each file of a chunk: remembered when its row matches, else read."""
        hashes: list[str | None] = list(map(known.get, chunk))
        for i in [i for i, h in enumerate(hashes) if h is None]:
            path, size, mtime, inode, _mode = chunk[i]
            memo = files.get(f"{rel}/{path}")
            if memo is not None and (memo.size, memo.mtime, memo.inode) == (size, mtime, inode) \
                    and self._trusted(memo.checked, memo.mtime):
                hashes[i] = memo.hash
            else:
                hashes[i] = hash_sized(os.path.join(full, path), size)
        return [h for h in hashes if h is not None]
