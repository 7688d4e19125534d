"""One walk of a folder: every file below it with its stat, in chunks of CHUNK files, each chunk
summed up by a signature (the hash of its rows) and its newest mtime or ctime.

The walk is the floor of a status over a large folder, and most of it is the `stat` of each file
(the listing is about a tenth). Threads do not make it faster (each `stat` is short, and the
threads take turns at the interpreter lock), so a folder is listed first, then its files are
stat-ed by up to PARTS processes at once: this one, and (for a large folder, on Linux) forked
children that each stat a run of whole chunks and send back its chunks' rows as marshal bytes
(the bytes the signature hashes). The rows, their order and the chunks are exactly those of one process doing
it all, which `scan(root, parts=1)` does; a child that fails is redone here, so its error (a
symlink leading nowhere) is raised as the one-process walk raises it.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import marshal
import mmap
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import overload

import xxhash

from pivot.layout import TMP_DIR, WALK_AHEAD

# A file as the walk finds it: path below the folder, size, mtime (ns), inode, mode, ctime (ns).
Row = tuple[str, int, int, int, int, int]
# A chunk's rows as marshal bytes: made here, or a view of the memory a forked process wrote them to.
Blob = bytes | memoryview
CHUNK = 1024
PARTS = 4  # processes stat-ing one folder at most (never more than the CPUs this process may use)
PART_MIN = 4 * CHUNK  # files each process stats at least: below, forking costs more than it saves
EARLY_MIN = 2 * PART_MIN  # files of a folder that `pivot status` walks ahead (`ahead`)
FDS = 256  # folders listed through a descriptor at most (the others by path)
_MTIME, _CTIME = itemgetter(2), itemgetter(5)  # of a Row

# The walk's listing: each folder's files (entries that are not folders), as (path prefix below
# the root, the folder's descriptor or None, the files' names).
Listing = list[tuple[str, int | None, list[str]]]


def signature(blob: Blob) -> str:
    """A chunk's signature: the hash of its rows as marshal version 2 writes them (the same
    bytes for equal values)."""
    return xxhash.xxh3_128_hexdigest(blob)


class Chunks(Sequence[list[Row]]):
    """The walk's chunks of rows; those a child stat-ed are decoded when first asked for."""

    def __init__(self, parts: list[list[Row] | Blob]) -> None:
        self._parts = parts

    def __len__(self) -> int:
        return len(self._parts)

    @overload
    def __getitem__(self, i: int) -> list[Row]: ...
    @overload
    def __getitem__(self, i: slice) -> list[list[Row]]: ...
    def __getitem__(self, i: int | slice) -> list[Row] | list[list[Row]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        part = self._parts[i]
        if isinstance(part, (bytes, memoryview)):
            part = self._parts[i] = marshal.loads(part)
        return part


@dataclass(frozen=True)
class Walk:
    chunks: Chunks
    sigs: list[str]  # each chunk's signature
    tops: list[int]  # each chunk's newest mtime or ctime (ns)
    parts: int  # processes that stat-ed the files (1: this one alone)
    files: int  # rows in all
    early: bool = False  # walked ahead by a forked process (`ahead`), not when scan was called


def listing(root: str, fds: list[int]) -> Listing:
    """Every folder below root (following symlinks), depth first in the order of `scan`, with
    the names of its entries that are not folders, from the directory listing alone (a stat
    only for a symlink, or where the file system does not give an entry's type). The first FDS
    folders with files are opened, their descriptors added to `fds` (the caller closes them),
    so that a file's stat looks its name up in its folder rather than its whole path."""
    found: Listing = []
    stack = [""]
    while stack:
        rel = stack.pop()
        path = os.path.join(root, rel)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if len(fds) < FDS else None
        if fd is not None:
            fds.append(fd)
        with os.scandir(path if fd is None else fd) as it:
            entries = list(it)
        names = [e.name for e in entries if not e.is_dir()]  # is_dir: the listing's type, remembered
        if len(names) < len(entries):
            stack.extend([rel + e.name + "/" for e in entries if e.is_dir()])
        del entries
        if names:
            found.append((rel, fd, names))
        elif fd is not None:
            os.close(fds.pop())
    return found


def stat_rows(root: str, found: Listing, lo: int, hi: int) -> list[Row]:
    """The rows of the files numbered lo to hi (excluded) of a listing. Each stat_result is
    dropped once its row is made (a DirEntry would keep it: 100,000 of them are 70 MB)."""
    rows: list[Row] = []
    at = 0
    for rel, fd, names in found:
        if at < hi and at + len(names) > lo:
            part = names[max(lo - at, 0):hi - at]
            if fd is None:
                where = os.path.join(root, rel)
                rows += [(rel + n, s.st_size, s.st_mtime_ns, s.st_ino, s.st_mode, s.st_ctime_ns)
                         for n in part for s in (os.stat(where + n),)]
            else:
                rows += [(rel + n, s.st_size, s.st_mtime_ns, s.st_ino, s.st_mode, s.st_ctime_ns)
                         for n in part for s in (os.stat(n, dir_fd=fd),)]
        at += len(names)
    return rows


def _summary(rows: list[Row]) -> tuple[list[list[Row]], list[Blob], list[int]]:
    """Rows in chunks; each chunk as marshal bytes, and its newest mtime or ctime."""
    chunks = [rows[i:i + CHUNK] for i in range(0, len(rows), CHUNK)]
    tops = [max(max(map(_MTIME, c)), max(map(_CTIME, c))) for c in chunks]
    return chunks, [marshal.dumps(c, 2) for c in chunks], tops


def _can_fork() -> int:
    """How many processes may stat at once: the CPUs this process may use, when forking is
    safe (Linux, and no other thread in this process that a child could inherit mid-lock)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "memfd_create") or threading.active_count() > 1:
        return 1
    return min(PARTS, len(os.sched_getaffinity(0)))


def scan(root: str, parts: int | None = None) -> Walk:
    """Walk root: its files' rows in chunks of CHUNK, by up to `parts` processes (default: as
    many as the CPUs, at least PART_MIN files each; or the walk of root started ahead by
    `ahead`, when there is one). Call it with the cyclic garbage collector off
    (`hashing.no_gc`): 100,000 live tuples would otherwise start collections that go through
    all of them."""
    early = _AHEAD.pop(root, None) if parts is None else None
    if early is not None:
        found = early.result()
        if found is not None:
            return found
    fds: list[int] = []
    try:
        return _scan(root, fds, parts)
    finally:
        for fd in fds:
            os.close(fd)


def _scan(root: str, fds: list[int], parts: int | None) -> Walk:
    chunks, blobs, tops, n, total = _walk(root, fds, parts)
    return Walk(Chunks(chunks), [signature(b) for b in blobs], tops, n, total)


def _walk(root: str, fds: list[int], parts: int | None) -> tuple[list[list[Row] | Blob], list[Blob], list[int],
                                                                  int, int]:
    """The walk's chunks (rows, or a child's marshal bytes), every chunk's marshal bytes, the
    chunks' newest times, the processes that stat-ed and the files found."""
    found = listing(root, fds)
    total = sum(len(names) for _rel, _fd, names in found)
    chunks = -(-total // CHUNK)
    n = min(_can_fork(), total // PART_MIN) if parts is None else min(parts, chunks)
    n = max(n, 1)
    per = max(-(-chunks // n), 1) * CHUNK  # files per process: whole chunks
    with _children(root, found, [(lo, min(lo + per, total)) for lo in range(per, total, per)]) as children:
        mine, blobs, tops = _summary(stat_rows(root, found, 0, min(per, total)))
        rows: list[list[Row] | Blob] = list(mine)
        for child in children:
            theirs, their_tops = child.result()
            rows += theirs
            blobs += theirs
            tops += their_tops
    return rows, blobs, tops, n, total


def _send(buf: int, blobs: list[Blob]) -> list[int]:
    """Write the chunks' marshal bytes, one after another, into the shared memory file `buf` (a
    copy in memory: no pipe, no reader woken); their lengths, which the reader is sent."""
    view = memoryview(b"".join(blobs))
    while view:
        view = view[os.write(buf, view):]
    return [len(b) for b in blobs]


def _received(buf: int, lens: list[int]) -> list[Blob]:
    """What `_send` wrote into `buf` (closed here): each chunk a view of the file's memory, read
    only when the chunk is."""
    try:
        size = sum(lens)
        if os.fstat(buf).st_size != size or not all(isinstance(n, int) and n > 0 for n in lens):
            raise ValueError("a walk's chunks were not all written")
        view = memoryview(mmap.mmap(buf, size, prot=mmap.PROT_READ))
    finally:
        os.close(buf)
    at = list(itertools.accumulate(lens, initial=0))
    return [view[a:b] for a, b in itertools.pairwise(at)]


class _Sent:
    """A forked process's pipe and shared memory file, from which the parent reads its result."""

    def __init__(self) -> None:
        self.read, self.write = os.pipe()
        self.buf = os.memfd_create("pivot-walk", os.MFD_CLOEXEC)
        self.pid = 0

    def header(self) -> tuple[bool, bytes]:
        """Whether the process succeeded, and what it sent through the pipe."""
        with open(self.read, "rb") as pipe:
            self.read = -1
            data = pipe.read()
        _pid, status = os.waitpid(self.pid, 0)
        self.pid = 0
        return os.waitstatus_to_exitcode(status) == 0, data

    def blobs(self, lens: list[int]) -> list[Blob]:
        buf, self.buf = self.buf, -1
        return _received(buf, lens)

    def abandon(self, group: bool = False) -> None:
        """Close what is left; stop and reap the process (with its process group) if it runs."""
        for fd in (self.read, self.buf):
            if fd >= 0:
                os.close(fd)
        self.read = self.buf = -1
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                (os.killpg if group else os.kill)(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = 0


class _Child(_Sent):
    """A forked process stat-ing files lo to hi of a listing; `result` its summary, or the same
    summary made here when the child failed."""

    def __init__(self, root: str, found: Listing, lo: int, hi: int) -> None:
        super().__init__()
        self.root, self.found, self.lo, self.hi = root, found, lo, hi
        self.pid = os.fork()
        if self.pid == 0:  # the child: stat, send, and leave without running any clean-up
            code = 1
            try:
                os.close(self.read)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _chunks, blobs, tops = _summary(stat_rows(root, found, lo, hi))
                lens = _send(self.buf, blobs)
                with open(self.write, "wb") as out:
                    out.write(marshal.dumps((lens, tops), 2))
                code = 0
            finally:
                os._exit(code)
        os.close(self.write)

    def result(self) -> tuple[list[Blob], list[int]]:
        ok, data = self.header()
        if ok:
            with contextlib.suppress(ValueError, EOFError, TypeError, OSError):
                lens, tops = marshal.loads(data)
                if isinstance(lens, list) and isinstance(tops, list) and len(lens) == len(tops):
                    return self.blobs(lens), tops
        self.abandon()
        return _summary(stat_rows(self.root, self.found, self.lo, self.hi))[1:]  # raises what the child met


@contextlib.contextmanager
def _children(root: str, found: Listing, ranges: list[tuple[int, int]]) -> Iterator[list[_Child]]:
    children: list[_Child] = []
    try:
        for lo, hi in ranges:
            children.append(_Child(root, found, lo, hi))
        yield children
    finally:
        for child in children:
            child.abandon()


# -- walks ahead ------------------------------------------------------------------------------
# `pivot status` knows the large folders it walked last time (hashing.large_folders) before it
# has loaded the pipeline, and walks them ahead in a forked process while it loads it (about a
# third of a status over a 100,000-file folder). `scan` of such a folder then takes that walk: one
# made after the command started, by the same code, as the command's own walk would be.
_AHEAD: dict[str, _Ahead] = {}


class _Ahead(_Sent):
    """A forked process (the leader of its own process group, so that it and the children its
    walk forks are stopped together) walking one folder: it sends the chunks' signatures and
    newest times, the parts and the files through the pipe, the chunks' bytes as `_Child` does."""

    def __init__(self, root: str) -> None:
        super().__init__()
        self.pid = os.fork()
        if self.pid == 0:  # the walker: walk, send, and leave without running any clean-up
            code = 1
            try:
                os.close(self.read)
                os.setpgid(0, 0)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _AHEAD.clear()  # the other walks ahead are the parent's (never taken here)
                gc.disable()
                _chunks, blobs, tops, n, total = _walk(root, [], None)
                sigs = [signature(b) for b in blobs]
                lens = _send(self.buf, blobs)
                with open(self.write, "wb") as out:
                    out.write(marshal.dumps((lens, sigs, tops, n, total), 2))
                code = 0
            finally:
                os._exit(code)
        with contextlib.suppress(OSError):  # as the walker does: whichever runs first
            os.setpgid(self.pid, self.pid)
        os.close(self.write)

    def result(self) -> Walk | None:
        """The walk, or None when the walker failed (the caller walks again, and meets its error)."""
        ok, data = self.header()
        if ok:
            with contextlib.suppress(ValueError, EOFError, TypeError, OSError):
                lens, sigs, tops, n, total = marshal.loads(data)
                if isinstance(lens, list) and isinstance(sigs, list) and isinstance(tops, list) \
                        and len(lens) == len(sigs) == len(tops):
                    chunks: list[list[Row] | Blob] = list(self.blobs(lens))
                    return Walk(Chunks(chunks), sigs, tops, n, total, early=True)
        self.abandon()
        return None


def ahead_list(root: Path) -> list[str]:
    """The folders (relative to the project root) that the last status of the whole pipeline
    walked with at least EARLY_MIN files."""
    try:
        data = (root / WALK_AHEAD).read_bytes()
    except OSError:
        return []
    return [p for p in os.fsdecode(data).split("\0")[:-1] if p]


def keep_ahead_list(root: Path, large: list[str], before: list[str]) -> None:
    """Remember `large` for the next status (when it differs from what was remembered)."""
    if sorted(set(large)) != sorted(before):
        from pivot.atomic import write_bytes  # lazy: only when the list changed

        (root / TMP_DIR).mkdir(parents=True, exist_ok=True)
        write_bytes(root / WALK_AHEAD, b"".join(os.fsencode(p) + b"\0" for p in sorted(set(large))))


@contextlib.contextmanager
def ahead(roots: list[str]) -> Iterator[None]:
    """Walk these folders ahead (when this process may fork, on two CPUs or more), each in a
    forked process, while the caller does other work; inside, `scan` of one of them (the same
    path string) takes its walk, once. Walks not taken are stopped when the block ends. Only for
    a command that changes none of these folders before it scans them (`pivot status`)."""
    started = []
    try:
        if _can_fork() > 1:
            for root in dict.fromkeys(roots):
                if root not in _AHEAD:
                    started.append(root)
                    _AHEAD[root] = _Ahead(root)
        yield
    finally:
        for root in started:
            left = _AHEAD.pop(root, None)
            if left is not None:
                left.abandon(group=True)
