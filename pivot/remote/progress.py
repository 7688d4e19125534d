"""What a transfer shows: a files-and-bytes progress line, sizes for people, short path lists."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable


class Progress:
    """A files-and-bytes line on stderr when it is a terminal; silent otherwise."""

    def __init__(self, verb: str, total: int, enabled: bool | None = None) -> None:
        self.verb, self.total = verb, total
        self.files = 0
        self.bytes = 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last = 0.0
        self._start = time.monotonic()
        self._lock = threading.Lock()  # a folder remote's transfers report from several threads

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.files += 1
            self.bytes += nbytes
            now = time.monotonic()
            if self.enabled and (now - self._last > 0.1 or self.files == self.total):
                self._last = now
                rate = self.bytes / max(now - self._start, 1e-6)
                sys.stderr.write(f"\r{self.verb}: {self.files}/{self.total} files, {human(self.bytes)} "
                                 f"({human(rate)}/s)\x1b[K")
                sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self._last:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def duration(seconds: float) -> str:
    return f"{int(seconds // 60)} min" if seconds >= 60 else f"{int(seconds)} s"


def summarize(paths: Iterable[str], limit: int = 5) -> str:
    unique = sorted(set(paths))
    more = len(unique) - limit
    return ", ".join(unique[:limit]) + (f" and {more} more" if more > 0 else "")
