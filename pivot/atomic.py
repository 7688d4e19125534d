"""Atomic file writes: a unique temporary name in the same folder, then os.replace."""

from __future__ import annotations

import functools
import itertools
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def _mode_for(path: Path) -> int:
    """Keep an existing file's mode; a new file gets the usual 0666 less the umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~umask()


@functools.cache
def umask() -> int:
    # Reading the umask means setting it; do it once, before any worker threads exist.
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_holding = False  # the main thread is inside interrupts_deferred (a block inside it need not hold again)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, then deliver it: what the block began, it finishes.

    Python raises KeyboardInterrupt between any two bytecodes, so without this a Ctrl-C can land
    between creating a temporary file and the `try` that would remove it, or between writing a
    lock and recording that the stage is done. Only the main thread receives signals; elsewhere
    this does nothing."""
    global _holding
    if _holding or threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is None:
        yield  # held already by an outer block (which delivers it when it ends); signals go to the
        return  # main thread; a handler set outside Python could not be put back
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: pending.append(signum))
    _holding = True
    try:
        yield
    finally:
        _holding = False
        signal.signal(signal.SIGINT, previous)
        if pending:
            if callable(previous):  # default_int_handler raises KeyboardInterrupt; an outer deferral queues it
                previous(signal.SIGINT, None)
            elif previous == signal.SIG_DFL:
                signal.raise_signal(signal.SIGINT)


def write_bytes(path: Path, data: bytes, new: bool = False) -> None:
    """Replace `path` with `data`: readers see the old file or the new one, never a part, and
    an interrupted write leaves no temporary behind. (No fsync, as before: a crash of the machine
    may lose the new file, never leave a part of it under `path`.) `new`: the caller knows there
    is no such file yet, so no existing mode is looked for (a new file gets the usual mode)."""
    mode = 0o666 & ~umask() if new else _mode_for(path)
    with interrupts_deferred():
        fd, tmp = create_temporary(path, mode)
        try:
            if mode & (umask() | 0o7000):  # bits the umask (or open) may have left out: set
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.close(fd)
            fd = -1
            os.replace(tmp, path)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            _unlink(tmp)
            raise


_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
_names = itertools.count()


def create_temporary(path: Path, mode: int = 0o600) -> tuple[int, str]:
    """A new file `.<name>.<pid>-<n>.tmp` beside `path` (its folder made when missing), open for
    writing, made with `mode` less the umask (the file's mode to be: no fchmod for a new file):
    what tempfile.mkstemp makes, without its cost per call (a first run writes two files per stage)."""
    for _ in range(10_000):
        tmp = os.path.join(path.parent, f".{path.name}.{os.getpid()}-{next(_names)}.tmp")
        try:
            return os.open(tmp, _FLAGS, mode), tmp
        except FileExistsError:  # left by a killed process whose pid this one has now
            continue
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
    raise FileExistsError(f"no free temporary name beside {path}")


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def _unlink(path: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)
