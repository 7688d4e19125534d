"""One lock file per stage: .pivot/stages/<stage>.lock, deterministic YAML, written atomically."""

from __future__ import annotations

import functools
import marshal
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from pivot import atomic, yamlio
from pivot.errors import LockError, YamlProblem
from pivot.hashing import RACY_NS, hash_bytes
from pivot.layout import LOCK_SUFFIX, stage_file, stage_of_file
from pivot.records import OutputKind, PathRecord, assemble
from pivot.state import State

LOCK_SCHEMA = 1
_KINDS = {str(k): k for k in OutputKind}


@dataclass(frozen=True)
class StageLock:
    fingerprint: str
    code_manifest: dict[str, str]
    params: dict[str, Any] | None
    deps: tuple[PathRecord, ...]
    outs: tuple[PathRecord, ...]
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        code: dict[str, Any] = {"fingerprint": self.fingerprint, "manifest": dict(self.code_manifest)}
        if self.notes:
            code["notes"] = list(self.notes)
        d: dict[str, Any] = {
            "schema": LOCK_SCHEMA,
            "code": code,
            "deps": [r.to_dict() for r in sorted(self.deps, key=lambda r: r.path)],
            "outs": [r.to_dict() for r in sorted(self.outs, key=lambda r: r.path)],
        }
        if self.params is not None:
            d["params"] = self.params
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageLock:
        code = d["code"]
        manifest = code.get("manifest") or {}
        if not isinstance(code["fingerprint"], str) or not isinstance(manifest, dict) \
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in manifest.items()):
            raise TypeError("code.fingerprint must be a string and code.manifest a mapping of strings")
        if d.get("params") is not None and not isinstance(d["params"], dict):
            raise TypeError("params must be a mapping")
        for key in ("deps", "outs"):
            if not isinstance(d.get(key) or [], list):
                raise TypeError(f"{key} must be a list")
        return cls(
            fingerprint=code["fingerprint"],
            code_manifest=dict(code.get("manifest") or {}),
            params=d.get("params"),
            deps=tuple(PathRecord.from_dict(r) for r in d.get("deps") or ()),
            outs=tuple(PathRecord.from_dict(r) for r in d.get("outs") or ()),
            notes=tuple(code.get("notes") or ()),
        )


def lock_path(stages_dir: Path, stage: str) -> Path:
    return stages_dir / stage_file(stage, LOCK_SUFFIX)


def dumps(lock: StageLock) -> str:
    """The lock file's text: `yamlio.dumps(lock.to_dict())`, byte for byte. Written directly for
    the usual lock (every string a plain or simply quoted YAML scalar, see `_scalar`); anything
    else goes through PyYAML. A first run writes one lock per stage, and PyYAML's emitter cost
    about a tenth of a millisecond per lock more than this (issue #19)."""
    text = _direct(lock)
    return text if text is not None else yamlio.dumps(lock.to_dict())


# A string made of these, a single space or colon between runs, is a plain YAML scalar unless it
# reads as another type (a number, a date, a boolean...), when PyYAML single-quotes it.
_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./+-]*(?:[ :][A-Za-z0-9_./+-]+)*")
_KEY_LIMIT, _VALUE_LIMIT = 100, 400  # longer keys are not simple keys; long lines might fold


# PyYAML's implicit resolvers (yaml/resolver.py, unchanged since PyYAML 3.x), each with the first
# characters it is tried for: a plain scalar that one of them matches reads as another type. Kept
# here so that writing a lock does not import PyYAML (about 10 ms of a first run's start-up);
# tests/test_lock_yaml.py checks them against PyYAML's own resolver.
_IMPLICIT: tuple[tuple[frozenset[str], re.Pattern[str]], ...] = (
    (frozenset("yYnNtTfFoO"), re.compile(r"""^(?:yes|Yes|YES|no|No|NO
                    |true|True|TRUE|false|False|FALSE
                    |on|On|ON|off|Off|OFF)$""", re.X)),
    (frozenset("-+0123456789."), re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
                    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
                    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X)),
    (frozenset("-+0123456789"), re.compile(r"""^(?:[-+]?0b[0-1_]+
                    |[-+]?0[0-7_]+
                    |[-+]?(?:0|[1-9][0-9_]*)
                    |[-+]?0x[0-9a-fA-F_]+
                    |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$""", re.X)),
    (frozenset("<"), re.compile(r"^(?:<<)$")),
    (frozenset(["~", "n", "N", ""]), re.compile(r"""^(?: ~
                    |null|Null|NULL
                    | )$""", re.X)),
    (frozenset("0123456789"), re.compile(r"""^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
                    |[0-9][0-9][0-9][0-9] -[0-9][0-9]? -[0-9][0-9]?
                     (?:[Tt]|[ \t]+)[0-9][0-9]?
                     :[0-9][0-9] :[0-9][0-9] (?:\.[0-9]*)?
                     (?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$""", re.X)),
    (frozenset("="), re.compile(r"^(?:=)$")),
    (frozenset("!&*"), re.compile(r"^(?:!|&|\*)$")),
)


@functools.lru_cache(maxsize=4096)
def reads_as_string(text: str) -> bool:
    """Whether PyYAML reads `text`, written as a plain scalar, as a string (its resolver's answer)."""
    first = text[:1]
    return not any(first in chars and pattern.match(text) for chars, pattern in _IMPLICIT)


def _scalar(text: str, limit: int) -> str | None:
    """`text` as PyYAML writes it in a block mapping, or None when that is not simply known."""
    if len(text) > limit or not _PLAIN.fullmatch(text) or text.startswith(("---", "...")):
        return None
    return text if reads_as_string(text) else f"'{text}'"


def _records(key: str, records: tuple[PathRecord, ...]) -> list[str] | None:
    if not records:
        return [f"{key}: []"]
    lines = [f"{key}:"]
    for r in sorted(records, key=lambda r: r.path):
        path, digest = _scalar(r.path, _VALUE_LIMIT), _scalar(r.hash, _VALUE_LIMIT)
        kind = _scalar(str(r.kind), _VALUE_LIMIT) if r.kind is not None else ""
        if path is None or digest is None or kind is None:
            return None
        first = "- dir: true\n  hash: " if r.is_dir else "- hash: "
        lines.append(f"{first}{digest}\n  path: {path}" + (f"\n  type: {kind}" if r.kind is not None else ""))
    return lines


def _direct(lock: StageLock) -> str | None:
    """The lock's YAML written here (see `dumps`); None for anything unusual."""
    fingerprint = _scalar(lock.fingerprint, _VALUE_LIMIT)
    if fingerprint is None:
        return None
    lines = ["code:", f"  fingerprint: {fingerprint}", "  manifest:" if lock.code_manifest else "  manifest: {}"]
    for key in sorted(lock.code_manifest):
        k, v = _scalar(key, _KEY_LIMIT), _scalar(lock.code_manifest[key], _VALUE_LIMIT)
        if k is None or v is None:
            return None
        lines.append(f"    {k}: {v}")
    if lock.notes:
        lines.append("  notes:")
        for note in lock.notes:
            text = _scalar(note, _VALUE_LIMIT)
            if text is None:
                return None
            lines.append(f"  - {text}")
    deps, outs = _records("deps", lock.deps), _records("outs", lock.outs)
    if deps is None or outs is None:
        return None
    lines += deps + outs
    params = "" if lock.params is None else yamlio.dumps({"params": lock.params})
    return "\n".join(lines) + "\n" + params + f"schema: {LOCK_SCHEMA}\n"


def loads(text: str | bytes, where: str | Path) -> StageLock:
    """Parse a lock file's bytes; `where` names it in errors (a path, or `<sha>:<path>`).
    A LockError's `detail` says what is wrong without the file's name or the fix."""
    fix = "restore it from git or delete it to re-run the stage"
    try:
        data = yamlio.parse(text)
    except YamlProblem as exc:
        line = f":{exc.line}" if exc.line is not None else ""
        detail = f"line {exc.line}: {exc.problem}" if exc.line is not None else exc.problem
        own_fix = fix if exc.fix == "fix the file and try again" else exc.fix  # the generic one: ours
        raise LockError(f"{where}{line}: {exc.problem}; {own_fix}", detail) from None
    try:
        return StageLock.from_dict(data)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        detail = f"not the shape of a lock file ({type(exc).__name__})"
        raise LockError(f"{where}: unreadable lock file ({type(exc).__name__}); {fix}", detail) from None


def read(stages_dir: Path, stage: str, state: State | None = None) -> StageLock | None:
    """Read a lock file. With a state, parsed locks are remembered by the hash of their bytes,
    since YAML parsing dominates a no-op status of many stages."""
    path = lock_path(stages_dir, stage)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if state is None:
        return loads(data, path)
    return _parse(data, path, state, hash_bytes(data))


def _parse(data: bytes, where: str | Path, state: State, digest: str) -> StageLock:
    """The lock in `data` (whose hash is `digest`), parsed once per content: remembered in the
    state database by that hash."""
    key = f"lock{LOCK_SCHEMA}:{digest}"
    cached = state.get_json(key)
    if cached is not None:
        return StageLock.from_dict(cached)
    lock = loads(data, where)
    state.put_json(key, lock.to_dict())
    return lock


def locked_stages(stages_dir: Path) -> list[str]:
    """The stages that have a lock file in `stages_dir` (its `<stage>.lock` files), sorted."""
    try:
        with os.scandir(stages_dir) as it:
            names = [stage_of_file(e.name, LOCK_SUFFIX) for e in it if not e.name.startswith(".") and e.is_file()]
        return sorted(n for n in names if n is not None)
    except (FileNotFoundError, NotADirectoryError):
        return []


def unknown_locks(stages_dir: Path, known: Iterable[str]) -> list[str]:
    """The stages with a lock file in `stages_dir` that are not among `known`, sorted (as
    `locked_stages`, without decoding the name of every expected file)."""
    expected = {stage_file(name, LOCK_SUFFIX) for name in known}
    try:
        with os.scandir(stages_dir) as it:
            names = [stage_of_file(e.name, LOCK_SUFFIX) for e in it
                     if e.name not in expected and not e.name.startswith(".") and e.is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in names if n is not None)


def with_variants(stages_dir: Path, names: Iterable[str], strict: bool = True) -> list[str]:
    """`names` with the name of a sweep (`train`) standing for the locks of its variants
    (`train@model=tree,seed=1`, ...). A name with no lock is kept when `strict` (the caller says
    it has none), else dropped."""
    locked = locked_stages(stages_dir)
    found: list[str] = []
    for name in names:
        variants = [s for s in locked if s.startswith(name + "@")] if name not in locked else [name]
        found.extend(variants or ([name] if strict else []))
    return list(dict.fromkeys(found))


STAT_MEMO = f"stat-lock{LOCK_SCHEMA}r:"  # state key prefix: stage -> its lock file's stat and parsed lock
_OLD_MEMOS = (f"stat-lock{LOCK_SCHEMA}:",)  # earlier forms of the memo (JSON text), dropped by `pivot gc`
_SUM = 8  # bytes of the checksum before a memo's payload


Sig = tuple[int, int, int, int]


def memo_row(sig: Sig, checked: int, digest: str, lock: StageLock) -> bytes | None:
    """A parsed lock as a memo row: a checksum, then the marshalled tuple `_row` reads (marshal:
    a no-op status of 10,000 stages decodes 10,000 of them): the file's stat, when it was taken,
    the hash of the file's bytes, and the lock. None for params that marshal cannot hold (then
    the lock is not remembered by stat)."""
    def rows(records: tuple[PathRecord, ...]) -> tuple[tuple[str, str, bool, str | None], ...]:
        return tuple((r.path, r.hash, r.is_dir, None if r.kind is None else str(r.kind)) for r in records)

    try:
        payload = marshal.dumps((sig, checked, digest, lock.fingerprint, lock.code_manifest, lock.params,
                                 rows(lock.deps), rows(lock.outs), lock.notes))
    except ValueError:  # a value marshal does not know (a date in params, say)
        return None
    return xxhash.xxh3_64_digest(payload) + payload


def _row(row: bytes) -> tuple[Any, ...] | None:
    """A memo row's tuple, None when it is damaged (a damaged row is a forgotten one)."""
    if not isinstance(row, bytes) or xxhash.xxh3_64_digest(row[_SUM:]) != row[:_SUM]:
        return None
    try:
        data = marshal.loads(row[_SUM:])
    except (ValueError, TypeError, EOFError):
        return None
    return data if isinstance(data, tuple) and len(data) == 9 else None


def _lock_of(data: tuple[Any, ...]) -> StageLock:
    """The lock of a memo row. Its values were checked when the file was parsed: it is built
    without checking them again."""
    def records(rows: tuple[tuple[str, str, bool, str | None], ...]) -> tuple[PathRecord, ...]:
        return tuple(assemble(PathRecord, path=path, hash=digest, is_dir=is_dir,
                              kind=None if kind is None else _KINDS[kind]) for path, digest, is_dir, kind in rows)

    return assemble(StageLock, fingerprint=data[3], code_manifest=data[4], params=data[5], deps=records(data[6]),
                    outs=records(data[7]), notes=data[8])


class LockReader:
    """Reads a project's lock files, remembering each parsed lock in the state database by the
    stat of its file, so that an unchanged lock costs one stat: the memo of every stage is
    read in one query.

    A stat is only proof of the bytes once it is RACY_NS older than the file's last change (a
    write within the timestamp granularity could leave the same stat behind). A row remembered
    sooner (a lock Pivot just wrote, or read right after it was written) also holds the hash of
    the bytes: while it is racy, a matching stat is confirmed by reading the file and comparing
    that hash (no parsing), and the row is then re-dated once it is old enough ("racy git")."""

    def __init__(self, stages_dir: Path, state: State) -> None:
        self.stages_dir = stages_dir
        self.state = state
        self._memo: dict[str, bytes] | None = None  # memo key -> the memo row
        self._prefix = os.path.join(stages_dir, "")
        # stage -> its lock file's stat (size, mtime, inode, ctime) where a memo older than the
        # racy window vouched for the lock read (pivot/uptodate.py remembers it)
        self.trusted: dict[str, tuple[int, int, int, int]] = {}
        self._stats: dict[str, os.stat_result | None] = {}

    def stat(self, stage: str) -> os.stat_result | None:
        """The stat of stage `stage`'s lock file (None: there is none), taken once per command,
        and again after `wrote`: the proof check (pivot/uptodate.py) and `read` share it."""
        if stage not in self._stats:
            try:
                self._stats[stage] = os.stat(self._prefix + stage_file(stage, LOCK_SUFFIX))
            except FileNotFoundError:
                self._stats[stage] = None
        return self._stats[stage]

    def read(self, stage: str) -> StageLock | None:
        path = self._prefix + stage_file(stage, LOCK_SUFFIX)
        st = self.stat(stage)  # before reading: a write after it changes the stat we remember
        if st is None:
            return None
        sig = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)  # any write moves the ctime; a rename the inode
        changed = max(st.st_mtime_ns, st.st_ctime_ns)
        if self._memo is None:
            self._memo = self.state.blobs_under(STAT_MEMO)
        row = self._memo.get(STAT_MEMO + stage)
        data = _row(row) if row is not None else None
        if data is not None and data[0] == sig and data[1] - changed >= RACY_NS:
            self.trusted[stage] = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
            return _lock_of(data)  # the usual case: one stat
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            return None
        digest = hash_bytes(raw)
        if data is not None and data[0] == sig and data[2] == digest:  # racy when remembered: the bytes agree
            lock = _lock_of(data)
        else:
            lock = _parse(raw, path, self.state, digest)
        self._remember(stage, sig, changed, digest, lock)
        if time.time_ns() - changed >= RACY_NS:  # as the row now says: old enough for its stat to vouch
            self.trusted[stage] = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        return lock

    def wrote(self, stage: str, lock: StageLock, data: bytes) -> None:
        """Remember the lock just written to stage `stage`'s file as `data` (racy for now: the
        next reads compare the bytes, which spares them parsing it)."""
        self.trusted.pop(stage, None)
        self._stats.pop(stage, None)
        st = self.stat(stage)
        if st is None:
            return
        sig = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        self._remember(stage, sig, max(st.st_mtime_ns, st.st_ctime_ns), hash_bytes(data), lock)

    def _remember(self, stage: str, sig: Sig, changed: int, digest: str, lock: StageLock) -> None:
        memo = memo_row(sig, time.time_ns(), digest, lock)
        if memo is not None:
            self.state.put_blob(STAT_MEMO + stage, memo)
            if self._memo is not None:
                self._memo[STAT_MEMO + stage] = memo


def prune_memo(stages_dir: Path, state: State) -> int:
    """Forget parsed locks that no lock file in the workspace has now (run by `pivot gc`)."""
    keep = {f"lock{LOCK_SCHEMA}:{hash_bytes(p.read_bytes())}" for p in stages_dir.rglob("*.lock")}
    stages = {STAT_MEMO + name for name in locked_stages(stages_dir)}
    old = sum(state.drop_json(prefix, set()) for prefix in _OLD_MEMOS)
    return state.drop_json(f"lock{LOCK_SCHEMA}:", keep) + state.drop_json(STAT_MEMO, stages) + old


def write(stages_dir: Path, stage: str, lock: StageLock, new: bool = False) -> bytes:
    """Write atomically; an identical lock is left untouched (replacing a file costs a flush).
    `new`: the stage had no lock file (a first run): there is none to compare or keep the mode
    of. Returns the file's bytes."""
    path = lock_path(stages_dir, stage)
    data = dumps(lock).encode()
    if not new:
        try:
            if path.read_bytes() == data:
                return data
        except FileNotFoundError:
            new = True
    atomic.write_bytes(path, data, new=new)
    return data
