"""One lock file per stage: .pivot/stages/<stage>.lock, deterministic YAML, written atomically."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pivot import atomic, yamlio
from pivot.errors import LockError, YamlProblem
from pivot.hashing import hash_bytes
from pivot.layout import LOCK_SUFFIX, stage_file, stage_of_file
from pivot.records import PathRecord
from pivot.state import State

LOCK_SCHEMA = 1


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
    return yamlio.dumps(lock.to_dict())


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
    if not stages_dir.is_dir():
        return []
    names = (stage_of_file(p.name, LOCK_SUFFIX) for p in stages_dir.glob(f"*{LOCK_SUFFIX}") if p.is_file())
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


def prune_memo(stages_dir: Path, state: State) -> int:
    """Forget parsed locks that no lock file in the workspace has now (run by `pivot gc`)."""
    keep = {f"lock{LOCK_SCHEMA}:{hash_bytes(p.read_bytes())}" for p in stages_dir.rglob("*.lock")}
    return state.drop_json(f"lock{LOCK_SCHEMA}:", keep)


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
