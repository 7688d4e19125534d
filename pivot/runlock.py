"""One pivot process at a time may change a project's workspace, cache and locks."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from pivot.errors import LockError

_HELD: set[int] = set()  # the descriptors of the project locks this process holds


def held_fds() -> frozenset[int]:
    """The file descriptors of the project locks this process holds now: a worker forked from it
    closes them, so that the lock goes with its holder (pivot/executor/workers.py)."""
    return frozenset(_HELD)


class ProjectLock:
    """An exclusive flock on .pivot/tmp/run.lock. The kernel drops it when the holder dies,
    so a lock left by a killed run never blocks the next one."""

    def __init__(self, pivot_dir: Path, command: str) -> None:
        self.path = pivot_dir / "tmp" / "run.lock"
        self.command = command
        self._fd: int | None = None

    def __enter__(self) -> ProjectLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockError(
                f"another pivot process holds this project ({holder}); wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, pivot {self.command}\n".encode(), 0)
        self._fd = fd
        _HELD.add(fd)
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        if self._fd is not None:
            _HELD.discard(self._fd)
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
