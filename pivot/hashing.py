"""xxh3-128 hashes of files and directories, remembered by (path, size, mtime, inode, ctime).

A folder is remembered whole: one walk of it (`walk.scan`: a stat per entry and no other
per-file work, shared out among forked processes for a large folder) gives a signature of every
file's path, size, mtime, inode, mode and ctime, and when that matches the state's, the folder's
hash is the remembered one. Otherwise the walk is compared with the remembered one in chunks of
FOLDER_CHUNK files (each also by signature): only the files of chunks that differ are looked up,
only files that differ are read, and the remembered manifest is patched where a file's content
changed (rebuilt when files were added, removed or renamed). The manifest, and so the hash, is
the same as hashing every file.

The ctime is in every key because the mtime can be set back after a same-size edit (`cp -p`,
`touch -d`, os.utime, rsync -t); the ctime cannot, as any write, utime, chmod or link count
change sets it to the present. Those that keep the content (a hardlink into the cache, a chmod)
cost one more read of the file, never a wrong answer.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import json
import marshal
import os
import stat as stat_mod
import time
from collections.abc import Iterator, Sequence
from functools import partial
from json.encoder import encode_basestring_ascii as json_str
from operator import itemgetter
from pathlib import Path

import xxhash

from pivot.errors import StateError
from pivot.records import DirEntry, FileMemo, FileMemoRow, FolderMemo, PathHash
from pivot.state import State
from pivot.walk import CHUNK as CHUNK_FILES
from pivot.walk import EARLY_MIN, Row, Walk, scan

CHUNK = 1024 * 1024
# A hash recorded less than this long after the file's mtime or ctime is not trusted later:
# the file may have been rewritten within the file system's timestamp granularity.
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


_ENTRY = b'},{"hash":"'
_REGION = 64 * 1024


def _regions(a: bytes, b: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Two manifests as written by manifest_bytes (without their brackets) cut into pairs of
    regions at entries of the same path, about every 64 KiB: unchanged regions are equal bytes."""
    ia = ib = 0
    while (pa := a.find(_ENTRY, ia + _REGION)) >= 0:
        start = pa + 2
        key_at = a.find(b'"path":', start)
        key = a[key_at:a.find(b',"size":', key_at) + 8]  # '"path":"P","size":' is one entry's
        pb = b.find(key, ib)
        if key_at < 0 or pb < 0 or (at := b.rfind(b'{"hash":"', ib, pb)) <= ib:
            ia = start
            continue
        yield a[ia:start], b[ib:at]
        ia, ib = start, at
    yield a[ia:], b[ib:]


def _pieces(manifest: bytes, other: bytes) -> tuple[set[bytes], set[bytes]] | None:
    """The entries (as bytes) of two manifests written as manifest_bytes writes them, leaving
    out regions the same in both (a cut inside a path that holds '},{' gives pieces that do not
    parse, which sends changed_entries to the slow way). Sound without sorted input: an entry
    left out is in both manifests, as an entry is never twice in one."""
    if not all(m == b"[]" or (m.startswith(b"[{") and m.endswith(b"}]")) for m in (manifest, other)):
        return None
    mine: set[bytes] = set()
    theirs: set[bytes] = set()
    for ra, rb in _regions(manifest[1:-1], other[1:-1]):
        if ra != rb:
            for region, found in ((ra, mine), (rb, theirs)):
                region = region.rstrip(b",")
                if region:
                    found.update(region[1:-1].split(b"},{"))
    return mine, theirs


def _piece_entry(piece: bytes) -> DirEntry:
    r = json.loads(b"{" + piece + b"}")
    if not isinstance(r["path"], str) or not isinstance(r["hash"], str) or not isinstance(r["size"], int):
        raise TypeError("not a manifest entry")
    return DirEntry(r["path"], r["hash"], r["size"])


def changed_entries(manifest: bytes, other: bytes) -> tuple[list[DirEntry], list[DirEntry]]:
    """The entries of `manifest` that `other` lacks, and those of `other` that `manifest` lacks:
    a file whose content differs is in both. Parses only the entries that differ when both are
    written as manifest_bytes writes them (the case that matters: one file of 100,000 changed)."""
    pieces = _pieces(manifest, other)
    if pieces is not None:
        mine, theirs = pieces
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


Entry = tuple[str, str, int]  # a manifest entry: path, hash, size
FOLDER_CHUNK = CHUNK_FILES  # files of a walk chunk, entries of a manifest part


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _summed(blob: bytes) -> tuple[bytes, str]:
    return blob, xxhash.xxh3_64_hexdigest(blob)


def _checked(blob: bytes, digest: str) -> bytes | None:
    return blob if xxhash.xxh3_64_hexdigest(blob) == digest else None


def _segments(entries: list[Entry]) -> tuple[list[str], list[bytes]]:
    """A manifest's entries (sorted by path) in parts of FOLDER_CHUNK: each part's first path, text."""
    parts = [entries[i:i + FOLDER_CHUNK] for i in range(0, len(entries), FOLDER_CHUNK)]
    return [p[0][0] for p in parts], [manifest_text(p) for p in parts]


def _patch(firsts: list[str], texts: list[bytes], gone: set[Entry], new: set[Entry]) -> set[int] | None:
    """Replace in the manifest parts each entry of `gone` by the entry of `new` with its path (a
    file whose content changed); the parts changed, or None when the paths are not the same."""
    if {e[0] for e in gone} != {e[0] for e in new} or len(gone) != len(new):
        return None
    old = {e[0]: e for e in gone}
    changed: set[int] = set()
    for path, digest, size in new:
        i = max(0, bisect.bisect_right(firsts, path) - 1)
        before, after = manifest_text([old[path]]), manifest_text([(path, digest, size)])
        if before not in texts[i]:
            return None
        texts[i] = texts[i].replace(before, after, 1)  # unique: '{"' cannot occur inside a path
        changed.add(i)
    return changed


class Hasher:
    """Hashes workspace paths (relative to the project root), using the state's memo."""

    def __init__(self, root: Path, state: State) -> None:
        self.root = root
        self.state = state
        self._prefix = os.path.join(root, "")
        # path -> (stat key, PathHash) of files whose remembered hash was trusted in this process:
        # a path asked for again (a chain's output is the next stage's dep) costs a stat.
        self._trusted_now: dict[str, tuple[tuple[int, int, int, int], PathHash]] = {}
        self._steady = False  # inside `steady()`: such a path is not stat-ed again
        self.refreshed: list[str] = []  # remembered folders whose walk differed from the memo (re-read)
        self.large: list[str] = []  # folders walked with at least walk.EARLY_MIN files (walked ahead next time)

    @contextlib.contextmanager
    def steady(self) -> Iterator[None]:
        """A view of one moment (a plan, which writes nothing): inside, a file whose remembered
        hash was trusted once is not stat-ed again, so a chain's output, which is the next
        stage's dep, costs one stat. Outside, every call stats the path again."""
        self._steady = True
        try:
            yield
        finally:
            self._steady = False

    def _trusted(self, checked: int, mtime: int, ctime: int) -> bool:
        return checked - max(mtime, ctime) >= RACY_NS

    def trusted_key(self, rel: str) -> tuple[int, int, int, int] | None:
        """The stat (size, mtime, inode, ctime) of file `rel` when this process trusted its
        remembered hash (older than the racy window); else None."""
        seen = self._trusted_now.get(rel)
        return seen[0] if seen is not None else None

    def hash_path(self, rel: str) -> PathHash | None:
        """Hash a file or directory; None when it does not exist."""
        if self._steady and rel in self._trusted_now:
            return self._trusted_now[rel][1]
        full = self._prefix + rel
        try:
            st = os.stat(full)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat_mod.S_ISDIR(st.st_mode):
            with no_gc():  # _hash_dir's walk rows are gone before collecting starts again
                return self._hash_dir(rel, full)
        key = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        seen = self._trusted_now.get(rel)
        if seen is not None and seen[0] == key:
            return seen[1]
        row = self.state.get_file(rel)
        if row is not None and row[:4] == key and self._trusted(row.checked, row.mtime, row.ctime):
            found = self._trusted_now[rel] = (key, PathHash(row.hash, is_dir=False))
            return found[1]
        fresh = PathHash(self._hash_fresh(rel, full, st), is_dir=False)
        if self._trusted(time.time_ns(), st.st_mtime_ns, st.st_ctime_ns):  # as its new row: old enough to vouch
            self._trusted_now[rel] = (key, fresh)
        return fresh

    def _hash_fresh(self, rel: str, full: str, st: os.stat_result) -> str:
        """Read and hash a file no trusted memo row vouches for, and remember it."""
        digest = hash_file(full)
        self.state.put_files([FileMemoRow(rel, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns,
                                          time.time_ns(), digest)])
        return digest

    def remember(self, rel: str, digest: str) -> None:
        """Record the hash of a file we just wrote from a known object."""
        st = os.stat(os.path.join(self.root, rel))
        self.state.put_files([FileMemoRow(rel, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns,
                                          time.time_ns(), digest)])

    # -- folders -----------------------------------------------------------
    # A folder is remembered as its walk in chunks of FOLDER_CHUNK files, in walk order (a
    # signature each; the rows and hashes stored), and its manifest in parts of FOLDER_CHUNK
    # entries, in path order. Unchanged: one walk, its signatures, one row read. One file
    # changed: one chunk read, one file hashed, one manifest part patched, two rows written.
    def _hash_dir(self, rel: str, full: str, believe: bool = True) -> PathHash:
        """`believe`: False to go through the chunks even when the walk is the remembered one."""
        walk = scan(full)
        if walk.files >= EARLY_MIN:
            self.large.append(rel)
        sig = xxhash.xxh3_128_hexdigest("".join(walk.sigs).encode())
        memo = self.state.get_folder(rel)
        newest = max(walk.tops, default=0)  # the newest mtime or ctime of any file
        if believe and memo and memo.signature == sig and self._trusted(memo.checked, newest, newest):
            return PathHash(memo.hash, is_dir=True, load=partial(self._remembered_manifest, rel, memo.hash))
        return self._refresh(rel, full, walk, sig, memo)

    def _remembered_manifest(self, rel: str, digest: str) -> bytes:
        """The manifest of folder `rel` whose hash was found remembered as `digest`."""
        index = self._index(rel)
        texts = self._texts(rel, len(index[1])) if index is not None else None
        if texts is not None:
            manifest = b"[" + b",".join(texts) + b"]"
            if hash_bytes(manifest) == digest:
                return manifest
        # damaged, or changed by another process since: hash it again (from what is intact)
        with no_gc():
            found = self._hash_dir(rel, os.path.join(self.root, rel), believe=False)
        if found.hash != digest or found.given is None:
            raise StateError(f"'{rel}' changed while Pivot was reading it; run the command again")
        return found.given

    def _index(self, rel: str) -> tuple[list[str], list[str]] | None:
        """The remembered walk chunks' signatures and manifest parts' first paths of `rel`."""
        stored = self.state.get_folder_index(rel)
        blob = _checked(*stored) if stored is not None else None
        try:
            sigs, firsts = marshal.loads(blob) if blob is not None else (None, None)
        except (ValueError, EOFError, TypeError):
            return None
        return (sigs, firsts) if isinstance(sigs, list) and isinstance(firsts, list) else None

    def _texts(self, rel: str, count: int) -> list[bytes] | None:
        """The remembered manifest parts of `rel`, or None when one is missing or damaged."""
        stored = self.state.get_folder_parts(rel, "text", list(range(count)))
        texts = [_checked(*stored[i]) if i in stored else None for i in range(count)]
        return None if None in texts else [t for t in texts if t is not None]

    def _walks(self, rel: str, idxs: list[int]) -> dict[int, tuple[list[Row], list[str]]]:
        """Remembered walk chunks (rows and hashes) of `rel`; damaged ones are left out."""
        found = {}
        for i, (data, digest) in self.state.get_folder_parts(rel, "walk", idxs).items():
            try:
                rows, hashes = marshal.loads(data) if _checked(data, digest) is not None else ((), ())
            except (ValueError, EOFError, TypeError):
                continue
            if isinstance(rows, list) and isinstance(hashes, list) and len(rows) == len(hashes) \
                    and all(len(r) == 6 for r in rows[:1]):  # Row's fields (with the ctime), not an older walk's
                found[i] = (rows, hashes)
        return found

    def _refresh(self, rel: str, full: str, walk: Walk, sig: str, memo: FolderMemo | None) -> PathHash:
        """Hash a folder whose walk differs from the remembered one (or that was never seen),
        reading only the files that differ, and remember it."""
        now = time.time_ns()
        chunks, sigs, tops = walk.chunks, walk.sigs, walk.tops
        index = self._index(rel) if memo is not None else None
        limit = memo.checked - RACY_NS if memo is not None else 0
        old_sigs, firsts = index if index is not None else ([], [])
        redo = [i for i in range(len(chunks)) if i >= len(old_sigs) or old_sigs[i] != sigs[i] or tops[i] > limit]
        stale = [i for i in range(len(old_sigs)) if i >= len(chunks) or i in set(redo)]  # remembered, differing
        olds = self._walks(rel, stale)
        known = {r: h for rows, hashes in olds.values() for r, h in zip(rows, hashes, strict=True)
                 if max(r[2], r[5]) <= limit}
        files = self.state.get_files_under(rel) if index is None and chunks else {}
        if memo is not None or files:  # not a folder hashed from nothing (the state deleted)
            self.refreshed.append(rel)
        walks = {i: (chunks[i], self._chunk_hashes(full, rel, chunks[i], known, files)) for i in redo}
        texts = self._texts(rel, len(firsts)) if index is not None and len(olds) == len(stale) else None
        changed = None
        if texts is not None:  # the entries of the differing chunks, before and now
            gone = {(r[0], h, r[1]) for rows, hashes in olds.values() for r, h in zip(rows, hashes, strict=True)}
            new = {(r[0], h, r[1]) for rows, hashes in walks.values() for r, h in zip(rows, hashes, strict=True)}
            changed = _patch(firsts, texts, gone - new, new - gone)
        if texts is None or changed is None:  # files added, removed or renamed: all parts anew
            firsts, texts = self._all_parts(rel, full, chunks, walks, known, files)
            changed = set(range(len(texts)))
        manifest = b"[" + b",".join(texts) + b"]"
        digest = hash_bytes(manifest)
        self.state.put_folder(rel, FolderMemo(sig, now, digest), _summed(marshal.dumps((sigs, firsts), 2)),
                              {"walk": ({i: _summed(marshal.dumps(w, 2)) for i, w in walks.items()}, len(chunks)),
                               "text": ({i: _summed(texts[i]) for i in changed}, len(texts))})
        return PathHash(digest, is_dir=True, given=manifest)

    def _all_parts(self, rel: str, full: str, chunks: Sequence[list[Row]],
                   walks: dict[int, tuple[list[Row], list[str]]], known: dict[Row, str],
                   files: dict[str, FileMemo]) -> tuple[list[str], list[bytes]]:
        """Every manifest part of a folder, from the hashes of every chunk: those just taken,
        the remembered ones of the other chunks (read again where damaged)."""
        rest = [i for i in range(len(chunks)) if i not in walks]
        olds = self._walks(rel, rest)
        entries: list[Entry] = []
        for i, chunk in enumerate(chunks):
            if i in walks:
                hashes = walks[i][1]
            elif i in olds and olds[i][0] == chunk:
                hashes = olds[i][1]
            else:
                hashes = self._chunk_hashes(full, rel, chunk, known, files)
                walks[i] = (chunk, hashes)
            entries.extend((r[0], h, r[1]) for r, h in zip(chunk, hashes, strict=True))
        entries.sort(key=itemgetter(0))
        return _segments(entries)

    def _chunk_hashes(self, full: str, rel: str, chunk: list[Row], known: dict[Row, str],
                      files: dict[str, FileMemo]) -> list[str]:
        """The hash of each file of a chunk: remembered when its row matches, else read."""
        hashes: list[str | None] = list(map(known.get, chunk))
        for i in [i for i, h in enumerate(hashes) if h is None]:
            path, size, mtime, inode, _mode, ctime = chunk[i]
            memo = files.get(f"{rel}/{path}")
            if memo is not None and (memo.size, memo.mtime, memo.inode, memo.ctime) == (size, mtime, inode, ctime) \
                    and self._trusted(memo.checked, memo.mtime, memo.ctime):
                hashes[i] = memo.hash
            else:
                hashes[i] = hash_sized(os.path.join(full, path), size)
        return [h for h in hashes if h is not None]
