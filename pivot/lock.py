"""One lock file per stage: .pivot/stages/<stage>.lock, deterministic YAML, written atomically."""

from __future__ import annotations

import functools
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pivot import atomic, yamlio
from pivot.errors import LockError, YamlProblem
from pivot.hashing import RACY_NS, hash_bytes
from pivot.layout import LOCK_SUFFIX, stage_file, stage_of_file
from pivot.records import OutputKind, PathRecord
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

    @classmethod
    def from_memo(cls, d: dict[str, Any]) -> StageLock:
        """A lock from the state database's memo, written by `to_dict` of a lock that was checked
        when its file was parsed: built without checking it again (a no-op status reads every lock)."""
        code = d["code"]

        def records(rows: list[dict[str, Any]]) -> tuple[PathRecord, ...]:
            return tuple(PathRecord(r["path"], r["hash"], "dir" in r, _KINDS[r["type"]] if "type" in r else None)
                         for r in rows)

        return cls(code["fingerprint"], code["manifest"], d.get("params"), records(d["deps"]), records(d["outs"]),
                   tuple(code.get("notes", ())))


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


@functools.lru_cache(maxsize=4096)
def _reads_as_string(text: str) -> bool:
    import yaml  # lazy: the resolver PyYAML's emitter asks, only when a lock is written

    resolver: Any = yaml.resolver.Resolver()  # PyYAML is not annotated
    return bool(resolver.resolve(yaml.ScalarNode, text, (True, False)) == "tag:yaml.org,2002:str")


def _scalar(text: str, limit: int) -> str | None:
    """`text` as PyYAML writes it in a block mapping, or None when that is not simply known."""
    if len(text) > limit or not _PLAIN.fullmatch(text) or text.startswith(("---", "...")):
        return None
    return text if _reads_as_string(text) else f"'{text}'"


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
    key = f"lock{LOCK_SCHEMA}:{hash_bytes(data)}"
    cached = state.get_json(key)
    if cached is not None:
        return StageLock.from_dict(cached)
    lock = loads(data, path)
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


STAT_MEMO = f"stat-lock{LOCK_SCHEMA}:"  # state key prefix: stage -> [stat of its lock file, parsed lock]


def stat_signature(st: os.stat_result) -> str:
    """What a lock file's stat says of its bytes: any write changes the ctime (which no one can
    set back), a replacing rename the inode."""
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


class LockReader:
    """Reads a project's lock files, remembering each parsed lock in the state database by the
    stat of its file, so that an unchanged lock costs one stat: the memo of every stage is
    read in one query. A lock file whose mtime or ctime is less than RACY_NS before the stat
    is not remembered by stat (it could change again within the timestamp granularity)."""

    def __init__(self, stages_dir: Path, state: State) -> None:
        self.stages_dir = stages_dir
        self.state = state
        self._memo: dict[str, str] | None = None  # stage -> the memo row's text (parsed on use)
        self._folder = str(stages_dir)

    def read(self, stage: str) -> StageLock | None:
        path = os.path.join(self._folder, stage_file(stage, LOCK_SUFFIX))
        try:
            st = os.stat(path)  # before reading: a write after it changes the stat we remember
        except FileNotFoundError:
            return None
        sig = stat_signature(st)
        if self._memo is None:
            self._memo = self.state.values_under(STAT_MEMO)
        row = self._memo.get(STAT_MEMO + stage)
        if row is not None and row.startswith(f'["{sig}",'):
            try:
                return StageLock.from_memo(json.loads(row)[1])
            except (ValueError, TypeError, KeyError, IndexError):
                pass  # a damaged memo row is a forgotten one
        lock = read(self.stages_dir, stage, self.state)
        if lock is not None and time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) >= RACY_NS:
            self.state.put_json(STAT_MEMO + stage, [sig, lock.to_dict()])
        return lock


def prune_memo(stages_dir: Path, state: State) -> int:
    """Forget parsed locks that no lock file in the workspace has now (run by `pivot gc`)."""
    keep = {f"lock{LOCK_SCHEMA}:{hash_bytes(p.read_bytes())}" for p in stages_dir.rglob("*.lock")}
    stages = {STAT_MEMO + name for name in locked_stages(stages_dir)}
    return state.drop_json(f"lock{LOCK_SCHEMA}:", keep) + state.drop_json(STAT_MEMO, stages)


def write(stages_dir: Path, stage: str, lock: StageLock) -> None:
    """Write atomically; an identical lock is left untouched (replacing a file costs a flush)."""
    path = lock_path(stages_dir, stage)
    data = dumps(lock).encode()
    try:
        if path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    atomic.write_bytes(path, data)
