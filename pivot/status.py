"""The run-or-skip decision: a pure function of the lock and the current state, with reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pivot.lock import StageLock
from pivot.records import PathRecord


@dataclass(frozen=True)
class Current:
    """What a stage is now: definition, code and the hashes found in the workspace."""

    fingerprint: str
    code_manifest: dict[str, str]
    params: dict[str, Any] | None
    deps: dict[str, str | None]  # path -> hash (None: missing)
    outs: dict[str, tuple[str, str | None]]  # path -> (kind, hash or None when missing)
    cached: frozenset[str] = frozenset()  # lock output paths whose object is in the cache
    damaged: frozenset[str] = frozenset()  # lock output paths whose object the workspace changed through a link
    upstream_running: tuple[str, ...] = ()
    forced: bool = False
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    run: bool
    reasons: tuple[str, ...] = ()
    restore: tuple[PathRecord, ...] = field(default=())  # outputs to bring back from the cache


_KIND_WORDS = {"func": "", "class": "class ", "const": "constant ", "closure": "closure variable ",
               "module": "module ", "pkg": "package ", "python": "Python "}


def _where(value: str | None) -> str:
    """The file recorded in a user-code manifest value ("<digest> <file>"), or ""."""
    return (value or "").partition(" ")[2]


def _module_prefix(name: str, where: str) -> str:
    """The module part of `module.NAME`, found from the file it lives in (pkg/sub.py: pkg.sub)."""
    path = where[:-3] if where.endswith(".py") else where
    parts = [p for p in path.split("/") if p]
    if parts and parts[-1] == "__init__":
        parts.pop()
    for i in range(len(parts)):  # a src/ layout: the module name is a suffix of the path
        module = ".".join(parts[i:])
        if name.startswith(module + "."):
            return module
    return ""


def _label(key: str, value: str | None = None) -> str:
    """How --explain names a manifest entry: `helpers.normalise`, `constant THRESHOLD`,
    `closure variable k of pipeline.scale`, `package numpy`."""
    kind, _, name = key.partition(":")
    if kind == "python":
        return "the Python version"
    if kind == "const":
        module = _module_prefix(name, _where(value))
        name = name[len(module) + 1:] if module else name
    elif kind == "closure":
        owner, _, var = name.rpartition(".")
        return f"default arguments of {owner}" if var == "<defaults>" else f"closure variable {var} of {owner}"
    return f"{_KIND_WORDS.get(kind, kind + ' ')}{name}"


def _in(key: str, value: str) -> str:
    """` (helpers.py)`: where a user-code entry lives; ` (1.26.4)` for a package's version."""
    if key.startswith(("pkg:", "python:")):
        return f" ({value})"
    where = _where(value)
    return f" ({where})" if where else ""


def code_changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """What changed between two code manifests, one line per entry, in key order:
    `helpers.normalise changed (helpers.py)`, `new dependency pkg.sub.scale (pkg/sub.py)`."""
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        if key not in old:
            out.append(f"new dependency {_label(key, new[key])}{_in(key, new[key])}")
        elif key not in new:
            out.append(f"no longer uses {_label(key, old[key])}{_in(key, old[key])}")
        elif old[key] != new[key]:
            if key.startswith(("pkg:", "python:")):
                out.append(f"{_label(key)} changed {old[key]} -> {new[key]}")
            else:
                out.append(f"{_label(key, new[key])} changed{_in(key, new[key])}")
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def param_changes(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    old, new = old or {}, new or {}
    out = []
    for key in sorted(set(old) | set(new)):
        if key not in old:
            out.append(f"param {key} added ({_short(new[key])})")
        elif key not in new:
            out.append(f"param {key} removed")
        elif old[key] != new[key]:
            out.append(f"param {key}: {_short(old[key])} -> {_short(new[key])}")
    return out


def decide(cur: Current, lock: StageLock | None) -> Decision:
    if lock is None:
        return Decision(True, ("never run: no lock file",))
    reasons: list[str] = []
    if cur.forced:
        reasons.append("forced")
    if cur.fingerprint != lock.fingerprint:
        changes = code_changes(lock.code_manifest, cur.code_manifest)
        reasons.extend(f"code: {c}" for c in changes or ["fingerprint changed"])
    if cur.params != lock.params:
        reasons.extend(param_changes(lock.params, cur.params) or ["params changed"])
    reasons.extend(f"upstream stage '{u}' will run" for u in cur.upstream_running)

    locked_deps = {r.path: r.hash for r in lock.deps}
    for path in sorted(set(locked_deps) | set(cur.deps)):
        if path not in locked_deps:
            reasons.append(f"dep '{path}' added")
        elif path not in cur.deps:
            reasons.append(f"dep '{path}' removed")
        elif cur.deps[path] is None:
            if not cur.upstream_running:
                reasons.append(f"dep '{path}' is missing")
        elif cur.deps[path] != locked_deps[path]:
            reasons.append(f"dep '{path}' changed")

    locked_outs = {r.path: r for r in lock.outs}
    restore: list[PathRecord] = []
    for path in sorted(set(locked_outs) | set(cur.outs)):
        rec = locked_outs.get(path)
        if rec is None:
            reasons.append(f"output '{path}' added")
            continue
        if path not in cur.outs:
            reasons.append(f"output '{path}' removed from the stage")
            continue
        kind, digest = cur.outs[path]
        if kind != rec.kind:
            reasons.append(f"output '{path}' type changed {rec.kind} -> {kind}")
        elif digest is None:
            if path in cur.cached:
                restore.append(rec)
            else:
                reasons.append(f"output '{path}' is missing" + ("" if kind == "metric" else " and not in the cache"))
        elif digest != rec.hash:
            if path in cur.cached:  # the locked version is in the cache: restore, don't re-run
                restore.append(rec)
            elif path in cur.damaged:
                reasons.append(f"output '{path}' was changed in place through a link into the cache, "
                               "which damaged its locked version there")
            else:
                reasons.append(f"output '{path}' was modified" if kind == "metric"
                               else f"output '{path}' was modified and its locked version is not in the cache")
    if reasons:
        return Decision(True, tuple(reasons))
    return Decision(False, (), tuple(restore))
