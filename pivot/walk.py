"""One walk of a folder: every file below it with its stat, in chunks of CHUNK files, each chunk
summed up by a signature (the hash of its rows) and its newest mtime or ctime.

The walk is the floor of a status over a large folder, and most of it is the `stat` of each file
(the listing is about a tenth). Threads do not make it faster (each `stat` is short, and the
threads take turns at the interpreter lock), so a folder is listed first, then its files are
stat-ed by up to PARTS processes at once: this one, and (for a large folder, on Linux) forked
children that each stat a run of whole chunks. A child sends its chunks' head (lengths,
signatures, newest times) through a pipe, then writes their rows as marshal bytes (the bytes the
signature hashes) into a shared memory file (memfd), which this process maps and decodes a
chunk of only when asked for it. The rows, their order and the chunks are exactly those of one
process doing it all, which `scan(root, parts=1)` does; a child that fails is redone here, so
its error (a symlink leading nowhere) is raised as the one-process walk raises it.

`ahead` starts the same walk earlier, in a forked process of its own, while this one does other
work (`pivot status` loads the pipeline meanwhile); `scan` then takes its head, and its chunks
only if one is asked for.
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import overload

import xxhash

from pivot.errors import StateError
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
    """The walk's chunks of rows; those a child stat-ed are decoded when first asked for. A walk
    ahead's are all None until one is asked for: then `fetch` gives them all."""

    def __init__(self, parts: list[list[Row] | Blob] | list[None],
                 fetch: Callable[[], list[list[Row] | Blob]] | None = None) -> None:
        self._parts: list[list[Row] | Blob] | list[None] = parts
        self._fetch = fetch

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
        if part is None and self._fetch is not None:
            self._parts, self._fetch = self._fetch(), None
            part = self._parts[i]
        if isinstance(part, (bytes, memoryview)):
            part = self._parts[i] = marshal.loads(part)
        assert part is not None
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
    chunks, _blobs, head = _walk(root, fds, parts)
    return Walk(Chunks(chunks), head.sigs, head.tops, head.parts, head.files)


@dataclass(frozen=True)
class Head:
    """What a walk's chunks are: each one's length as marshal bytes, signature and newest time;
    and the processes that stat-ed, the files found."""
    lens: list[int]
    sigs: list[str]
    tops: list[int]
    parts: int
    files: int


def _walk(root: str, fds: list[int], parts: int | None,
          ready: Callable[[Head], None] | None = None) -> tuple[list[list[Row] | Blob], list[Blob], Head]:
    """The walk's chunks (rows, or a child's marshal bytes), every chunk's marshal bytes, and
    their Head; `ready` is given the Head as soon as every child has sent its part of it (before
    their chunks' bytes are read)."""
    found = listing(root, fds)
    total = sum(len(names) for _rel, _fd, names in found)
    chunks = -(-total // CHUNK)
    n = min(_can_fork(), total // PART_MIN) if parts is None else min(parts, chunks)
    n = max(n, 1)
    per = max(-(-chunks // n), 1) * CHUNK  # files per process: whole chunks
    with _children(root, found, [(lo, min(lo + per, total)) for lo in range(per, total, per)]) as children:
        mine, blobs, tops = _summary(stat_rows(root, found, 0, min(per, total)))
        head = Head([len(b) for b in blobs], [signature(b) for b in blobs], tops, n, total)
        heads = [child.head() for child in children]
        if ready is not None and all(h is not None for h in heads):
            ready(_joined([head, *[h for h in heads if h is not None]]))
        rows: list[list[Row] | Blob] = list(mine)
        for child in children:
            theirs, their_sigs, their_tops = child.result()
            rows += theirs
            blobs += theirs
            head.lens.extend(len(b) for b in theirs)
            head.sigs.extend(their_sigs)
            head.tops.extend(their_tops)
    return rows, blobs, head


def _send(buf: int, blobs: list[Blob]) -> list[int]:
    """Write the chunks' marshal bytes, one after another, into the shared memory file `buf` (a
    copy in memory: no pipe, no reader woken); their lengths, which the reader is sent."""
    _write(buf, b"".join(blobs))
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

    def start(self, work: Callable[[], list[Blob]], group: bool = False) -> None:
        """Fork the process: it runs `work` (which sends the Head itself), writes the blobs it
        returns into the shared memory file, sends one byte more and leaves without running any
        clean-up. `group`: it leads a process group of its own (its children stop with it)."""
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                os.close(self.read)
                if group:
                    os.setpgid(0, 0)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _send(self.buf, work())
                _write(self.write, b"!")
                code = 0
            finally:
                os._exit(code)
        if group:
            with contextlib.suppress(OSError):  # as the process does: whichever runs first
                os.setpgid(self.pid, self.pid)
        os.close(self.write)

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
    """A forked process stat-ing files lo to hi of a listing. It sends the Head of its chunks
    (`head`), then writes their bytes into the shared memory file and sends one byte more;
    `result` its chunks, or the same made here when the child failed."""

    def __init__(self, root: str, found: Listing, lo: int, hi: int) -> None:
        super().__init__()
        self.root, self.found, self.lo, self.hi = root, found, lo, hi
        self.got: Head | None = None
        self.start(self._stat)

    def _stat(self) -> list[Blob]:
        """In the child: stat its files and send their Head."""
        _chunks, blobs, tops = _summary(stat_rows(self.root, self.found, self.lo, self.hi))
        _send_head(self.write, Head([len(b) for b in blobs], [signature(b) for b in blobs], tops, 1,
                                    self.hi - self.lo))
        return blobs

    def head(self) -> Head | None:
        """The child's Head, as soon as it has sent it; None when it failed first."""
        if self.got is None and self.read >= 0:
            self.got = _read_head(self.read)
        return self.got

    def result(self) -> tuple[list[Blob], list[str], list[int]]:
        head = self.head()
        if head is not None:
            ok, done = self.header()
            if ok and done == b"!":
                with contextlib.suppress(ValueError, OSError):
                    return self.blobs(head.lens), head.sigs, head.tops
        self.abandon()
        self.got = None  # redone here (what the head said may no longer hold)
        _rows, blobs, tops = _summary(stat_rows(self.root, self.found, self.lo, self.hi))  # raises what the child met
        return blobs, [signature(b) for b in blobs], tops


def _joined(heads: list[Head]) -> Head:
    """The Head of a walk from those of its parts (the first one's parts and files)."""
    return Head([n for h in heads for n in h.lens], [s for h in heads for s in h.sigs],
                [t for h in heads for t in h.tops], heads[0].parts, heads[0].files)


def _send_head(fd: int, head: Head) -> None:
    data = marshal.dumps((head.lens, head.sigs, head.tops, head.parts, head.files), 2)
    _write(fd, len(data).to_bytes(8, "little") + data)


def _read_head(fd: int) -> Head | None:
    """A Head as _send_head sent it; None when the pipe ends first or it does not parse."""
    with contextlib.suppress(ValueError, EOFError, TypeError, OSError):
        lens, sigs, tops, n, total = marshal.loads(_read(fd, int.from_bytes(_read(fd, 8), "little")))
        if isinstance(lens, list) and isinstance(sigs, list) and isinstance(tops, list) \
                and len(lens) == len(sigs) == len(tops) and isinstance(n, int) and isinstance(total, int):
            return Head(lens, sigs, tops, n, total)
    return None


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
    walk forks are stopped together) walking one folder. It sends first the walk's Head (all a
    folder found unchanged needs), as soon as its children have sent theirs, then writes the
    chunks' bytes into the shared memory file as `_Child` does, and sends one byte more when they
    are all there; they are waited for only when a chunk is asked for."""

    def __init__(self, root: str) -> None:
        super().__init__()
        self.root = root
        self.got: Head | None = None
        self.start(self._walk_ahead, group=True)

    def _walk_ahead(self) -> list[Blob]:
        """In the walker: walk the folder, sending its Head as soon as its children sent theirs."""
        _AHEAD.clear()  # the other walks ahead are the parent's (never taken here)
        gc.disable()
        sent: list[Head] = []

        def ready(head: Head) -> None:
            _send_head(self.write, head)
            sent.append(head)

        _chunks, blobs, head = _walk(self.root, [], None, ready)
        if not sent:  # a child failed before its head: its part was redone here
            _send_head(self.write, head)
        elif sent[0].sigs != head.sigs:  # ... after it: the head sent may be wrong
            raise StateError("a part of the walk changed")
        return blobs

    def result(self) -> Walk | None:
        """The walk, or None when the walker failed (the caller walks again, and meets its error)."""
        head = self.got = _read_head(self.read)
        if head is None:
            self.abandon(group=True)
            return None
        return Walk(Chunks([None] * len(head.lens), self.fetch), head.sigs, head.tops, head.parts, head.files,
                    early=True)

    def fetch(self) -> list[list[Row] | Blob]:
        """Every chunk, once the walker has written them all; walked here again if it has not (it
        failed, or was stopped at the end of `ahead`), which must find the same chunks."""
        assert self.got is not None
        if self.read >= 0:
            ok, done = self.header()
            if ok and done == b"!":
                with contextlib.suppress(ValueError, OSError):
                    return list(self.blobs(self.got.lens))
        self.abandon(group=True)
        fds: list[int] = []
        try:
            again = _scan(self.root, fds, 1)
        finally:
            for fd in fds:
                os.close(fd)
        if again.sigs != self.got.sigs:
            raise StateError(f"'{self.root}' changed while Pivot was reading it; run the command again")
        return list(again.chunks)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read(fd: int, size: int) -> bytes:
    """Exactly `size` bytes from a pipe (EOFError when it ends before)."""
    parts, left = [], size
    while left:
        got = os.read(fd, min(left, 1 << 20))
        if not got:
            raise EOFError("the walker stopped")
        parts.append(got)
        left -= len(got)
    return b"".join(parts)


def ahead_list(root: Path) -> list[str]:
    """The folders (relative to the project root) that the last status of the whole pipeline
    walked with at least EARLY_MIN files."""
    try:
        data = (root / WALK_AHEAD).read_bytes()
    except OSError:
        return []
    return [p for p in os.fsdecode(data).split("\0")[:-1]
            if p and not os.path.isabs(p) and ".." not in p.split("/")]  # inside the project only


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
    started: dict[str, _Ahead] = {}
    try:
        if _can_fork() > 1:
            for root in dict.fromkeys(roots):
                if root not in _AHEAD:
                    started[root] = _AHEAD[root] = _Ahead(root)
        yield
    finally:
        for root, walker in started.items():
            _AHEAD.pop(root, None)
            walker.abandon(group=True)  # taken or not: its chunks' bytes, if not fetched yet, are not needed
