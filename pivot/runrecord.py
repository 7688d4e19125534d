"""Run records: what a stage produced from which inputs, so that the same inputs never run twice.

A record's key is the xxh3-128 hash of everything that decides a stage's result (`run_key`): the
code fingerprint, the dependency hashes, the parameter values, the output declarations and
`RECORD_VERSION`. Its value is the lock the run wrote (output hashes included) and the content of
its metrics (which git keeps, not the cache). Records are immutable JSON files at
`.pivot/cache/runs/ab/<rest of key>` (the same layout on a remote: pivot/remote/runs.py), each
carrying a checksum of its own content; one that does not parse, does not check or does not
belong to its key is refused (`BadRunRecord`), never trusted.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pivot import atomic
from pivot.errors import BadRunRecord
from pivot.hashing import hash_bytes
from pivot.layout import RUN_RECORDS
from pivot.lock import StageLock
from pivot.records import is_digest

RECORD_VERSION = 1
FORMAT = "pivot-run-record"


def run_key(fingerprint: str, params: dict[str, Any] | None, deps: dict[str, str],
            outs: Iterable[tuple[str, str, bool]]) -> str:
    """The key of a run: `deps` path -> hash, `outs` (path, kind, cached) as declared. The stage's
    name is not part of it: a renamed stage with the same code and inputs finds its records."""
    body = {"v": RECORD_VERSION, "code": fingerprint, "params": params,
            "deps": sorted(deps.items()), "outs": sorted(list(o) for o in outs)}
    return hash_bytes(_canonical(body))


def relpath(key: str) -> str:
    """runs/ab/cdef… for key abcdef… (in the cache folder, and on a remote)."""
    if not is_digest(key):
        raise BadRunRecord(f"{key!r} is not a run key")
    return f"{RUN_RECORDS}/{key[:2]}/{key[2:]}"


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class RunRecord:
    key: str
    stage: str  # the stage that produced it (informational: the key does not name it)
    lock: StageLock
    metrics: dict[str, str] = field(default_factory=dict)  # metric path -> its content (utf-8)

    def encode(self) -> bytes:
        body = {"format": FORMAT, "version": RECORD_VERSION, "key": self.key, "stage": self.stage,
                "lock": self.lock.to_dict(), "metrics": dict(sorted(self.metrics.items()))}
        return _canonical({**body, "check": hash_bytes(_canonical(body))})

    @property
    def objects(self) -> list[str]:
        """The hashes of its cached outputs (a directory's manifest for a directory)."""
        return [r.hash for r in self.lock.outs if r.cached]


def decode(data: bytes, key: str) -> RunRecord:
    """The record stored under `key`; BadRunRecord (saying why) when it cannot be trusted."""
    try:
        d = json.loads(data)
        body = {k: v for k, v in d.items() if k != "check"}
    except (ValueError, AttributeError):
        raise BadRunRecord("not a run record (it does not parse)") from None
    if body.get("format") != FORMAT or body.get("version") != RECORD_VERSION:
        raise BadRunRecord(f"record format {body.get('version')!r} is not {RECORD_VERSION}")
    if d.get("check") != hash_bytes(_canonical(body)):
        raise BadRunRecord("its content does not match its checksum (altered or damaged)")
    if body.get("key") != key:
        raise BadRunRecord("it is stored under another key than its own")
    metrics = body.get("metrics")
    if not isinstance(metrics, dict) or not all(isinstance(v, str) for v in metrics.values()):
        raise BadRunRecord("its metrics are not a mapping of texts")
    try:
        lock = StageLock.from_dict(body["lock"])
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise BadRunRecord(f"its lock is unreadable ({type(exc).__name__})") from None
    for rec in lock.outs:
        if not rec.cached and hash_bytes(str(metrics.get(rec.path, "")).encode()) != rec.hash:
            raise BadRunRecord(f"metric '{rec.path}' does not match its hash")
    return RunRecord(key, str(body.get("stage", "")), lock, dict(metrics))


class LocalRuns:
    """The run records in the local cache folder (`.pivot/cache/runs/`)."""

    def __init__(self, cache_dir: Path) -> None:
        self.dir = cache_dir / RUN_RECORDS

    def path(self, key: str) -> Path:
        return self.dir.parent / relpath(key)

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def put(self, key: str, data: bytes, new: bool = False) -> None:
        """Store a record (atomically; an existing one is left as it is: records are immutable).
        `new`: the caller looked it up in this command and found none."""
        path = self.path(key)
        if new or not path.is_file():
            atomic.write_bytes(path, data, new=True)

    def all_keys(self) -> Iterator[str]:
        if not self.dir.is_dir():
            return
        for prefix in sorted(os.listdir(self.dir)):
            folder = self.dir / prefix
            if len(prefix) != 2 or not folder.is_dir():
                continue
            for name in sorted(os.listdir(folder)):
                if is_digest(prefix + name):
                    yield prefix + name

    def remove(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: it holds other records
            self.path(key).parent.rmdir()
