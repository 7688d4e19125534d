"""A stage found up to date remembers the proof: the stat of its lock file and of each of its
deps and outputs, with its fingerprint, params and declared paths. While all of these are as
remembered, the stage is as locked again, without reading its lock or looking up a hash: a
no-op status or run then costs, per stage, its fingerprint and one stat per file.

It vouches for nothing a full decision would not: every stat was trusted when remembered (the
lock's by `LockReader`, each file's by the hash memo, both older than the racy window), any write
moves a file's stat, and the fingerprint and params are compared live. Stages with a folder dep
or output are not remembered (a folder's stat does not move when a file inside it changes). The
proofs of a project are one checksummed row of the state database; a damaged row is forgotten.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import stat as stat_mod
from collections.abc import Callable, Container, Iterator
from pathlib import Path
from typing import Any

import xxhash

from pivot.state import State, unseal

KEY = "uptodate2"  # the state key of the project's proofs

StatKey = tuple[int, int, int, int]  # size, mtime_ns, inode, ctime_ns (as the hash memo's)
Outs = tuple[tuple[str, str], ...]  # (path, kind) of each declared output


class UpToDate:
    """The proofs of the stages last found up to date (see the module's doc)."""

    def __init__(self, root: Path, lock_stat: Callable[[str], os.stat_result | None], state: State) -> None:
        self.state = state
        self._prefix = os.path.join(root, "")
        self._lock_stat = lock_stat  # a stage's lock file's stat (LockReader.stat: one per command)
        self._rows: dict[str, tuple[Any, ...]] | None = None
        self._new: dict[str, tuple[Any, ...]] = {}
        self._seen: dict[str, StatKey | None] | None = None  # inside `steady`: stats taken

    def _all(self) -> dict[str, tuple[Any, ...]]:
        if self._rows is None:
            self._rows = decode(self.state.get_blob(KEY))
        return self._rows

    @contextlib.contextmanager
    def steady(self) -> Iterator[None]:
        """A view of one moment (a plan, which writes nothing): inside, a path stat-ed once is
        not stat-ed again (a chain's output is the next stage's dep). Outside, every check stats
        again (a run changes files between checks)."""
        self._seen = {}
        try:
            yield
        finally:
            self._seen = None

    def _key(self, rel: str) -> StatKey | None:
        seen = self._seen
        if seen is not None and rel in seen:
            return seen[rel]
        try:
            st = os.stat(self._prefix + rel)
        except OSError:
            key = None
        else:
            key = None if stat_mod.S_ISDIR(st.st_mode) else (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        if seen is not None:
            seen[rel] = key
        return key

    def has(self, name: str) -> bool:
        """Whether stage `name` has a proof at all (none on a first run): when not, nothing of it
        needs computing to know that `holds` is None."""
        return name in self._all()

    def holds(self, name: str, deps: tuple[str, ...], outs: Outs, fingerprint: str,
              params: dict[str, Any] | None) -> dict[str, str] | None:
        """The locked hash of each output when stage `name` is as it was when last found up to
        date (same declarations, fingerprint, params, lock file and files); else None."""
        row = self._all().get(name)
        if row is None:
            return None
        proof, lock_key, hashes = row
        if self._lock_key(name) != lock_key:
            return None
        key = self._key
        keys = tuple([key(p) for p in deps] + [key(o[0]) for o in outs])
        if None in keys or _digest(lock_key, fingerprint, params, deps, outs, keys) != proof:
            return None
        return dict(zip([o[0] for o in outs], hashes, strict=True))

    def _lock_key(self, name: str) -> StatKey | None:
        try:
            st = self._lock_stat(name)
        except OSError:
            return None
        return None if st is None else (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)

    def lock_unchanged(self, name: str) -> bool:
        """Stage `name`'s lock file is the one it was last found up to date with (so it can be
        read): a run's checks before its first stage need not read it."""
        row = self._all().get(name)
        return row is not None and self._lock_key(name) == row[1]

    def remember(self, name: str, lock_key: StatKey, deps: tuple[str, ...], outs: Outs, fingerprint: str,
                 params: dict[str, Any] | None, keys: tuple[StatKey, ...], hashes: tuple[str, ...]) -> None:
        """Stage `name` was found up to date from these trusted stats (see the module's doc)."""
        try:
            row = (_digest(lock_key, fingerprint, params, deps, outs, keys), lock_key, hashes)
        except ValueError:  # a value marshal does not know (a date in params): not remembered
            return
        if self._all().get(name) != row:
            self._new[name] = row

    def save(self, defined: Container[str]) -> None:
        """Write the proofs remembered by this command (nothing when none are new), without
        those of stages no longer `defined` (renamed or removed)."""
        if not self._new:
            return
        rows = self._all()
        rows.update(self._new)
        self._new = {}
        for gone in [n for n in rows if n not in defined]:
            del rows[gone]
        self.state.put_sealed(KEY, rows)


def _digest(lock_key: StatKey, fingerprint: str, params: dict[str, Any] | None, deps: tuple[str, ...],
            outs: Outs, keys: tuple[StatKey | None, ...]) -> bytes:
    """What a proof holds, in 16 bytes: marshal format 2 writes equal values as equal bytes (no
    back-references, which would depend on which objects happen to be shared)."""
    return xxhash.xxh3_128_digest(marshal.dumps((lock_key, fingerprint, params, deps, outs, keys), 2))


def decode(blob: bytes | None) -> dict[str, tuple[Any, ...]]:
    """The proofs stored as `blob` by stage; none when it is missing or damaged."""
    rows = unseal(blob)
    if not isinstance(rows, dict) or not all(isinstance(r, tuple) and len(r) == 3 for r in rows.values()):
        return {}
    return rows
