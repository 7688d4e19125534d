"""An append-only file of remembered entries (key -> value, both marshallable), for the group
memos of large modules (`importing.CodeMemo`, `fingerprint.summary.GroupMemo`): an edit appends
the entries of the groups it changed instead of rewriting every group's entry (a 2 MB pipeline of
10,000 stages keeps about 15 MB of them).

The file is a header, then records: the length of a payload (4 bytes), the payload (the marshalled
pair (key, value)) and its checksum (8 bytes, xxh3_64). A later record of a key replaces an earlier
one. Reading stops at the first record that is cut short or does not match its checksum (a crash
while appending, a corrupt disk): what came before it is used, and the next write rewrites the
file from what is live. The file is rewritten (compacted) also when it has grown to more than twice
what is live. Appending is one `write` of all the new records to a file opened with O_APPEND, so two
processes appending at once each add whole records; a rewrite replaces the file atomically (an
append to the file it replaced is lost: the entry is just made again the next time). Errors
(a read-only project, a full disk) are ignored: the memo is an optimisation only.
"""

from __future__ import annotations

import marshal
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from pivot import atomic

MAGIC = b"pivot memo log 1\n"
_LENGTH = struct.Struct("<I")
_SUM = 8
_MAX_PAYLOAD = 1 << 30


@dataclass
class Log:
    """What was read from a log file: its entries, and what a later write needs to know."""

    entries: dict[Any, Any] = field(default_factory=dict)
    sizes: dict[Any, int] = field(default_factory=dict)  # bytes of each entry's latest record
    size: int = 0  # bytes read (the header and whole records)
    clean: bool = False  # the file exists and was read to its end without a damaged record


def read(path: str) -> Log:
    """The entries of the log at `path` (none when it is missing, unreadable or not a log)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return Log()
    if not data.startswith(MAGIC):
        return Log()
    log = Log(size=len(MAGIC))
    view = memoryview(data)
    pos = len(MAGIC)
    end = len(data)
    while pos < end:
        if end - pos < _LENGTH.size:
            return log
        (length,) = _LENGTH.unpack_from(data, pos)
        start = pos + _LENGTH.size
        stop = start + length
        if stop + _SUM > end or view[stop:stop + _SUM] != xxhash.xxh3_64_digest(view[start:stop]):
            return log
        try:
            key, value = marshal.loads(view[start:stop])
        except (ValueError, EOFError, TypeError):
            return log
        log.entries[key] = value
        log.sizes[key] = stop + _SUM - pos
        pos = log.size = stop + _SUM
    log.clean = True
    return log


def _record(key: Any, value: Any) -> bytes:
    payload = marshal.dumps((key, value))
    if len(payload) > _MAX_PAYLOAD:
        raise ValueError("entry too large for a memo log")
    return _LENGTH.pack(len(payload)) + payload + xxhash.xxh3_64_digest(payload)


def write(path: str, old: Log, live: dict[Any, Any], fresh: set[Any]) -> None:
    """Remember `live` (every entry to keep), of which `fresh` are new or changed since `old` was
    read: appended to the file when it was read clean and stays at most twice what is live,
    else the file is rewritten with `live` only."""
    try:
        added = {key: _record(key, live[key]) for key in fresh if key in live}
        kept = all(k in added or k in old.sizes for k in live)  # else an entry would be missing
        live_size = len(MAGIC) + sum(len(added[k]) if k in added else old.sizes.get(k, 0) for k in live)
        if old.clean and kept and old.size + sum(map(len, added.values())) <= 2 * live_size:
            if added:
                _append(path, b"".join(added.values()))
            return
        _rewrite(path, b"".join([MAGIC, *(added.get(k) or _record(k, v) for k, v in live.items())]))
    except (OSError, ValueError):
        pass  # a read-only project, a full disk, an unmarshallable value: no memo, same results


def _append(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        written = os.write(fd, data)
    finally:
        os.close(fd)
    if written != len(data):
        raise OSError("short write to a memo log")


def _rewrite(path: str, data: bytes) -> None:
    atomic.write_bytes(Path(path), data)  # its folder made when missing; no tempfile (start-up)
