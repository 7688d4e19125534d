"""The run-or-skip decision: a pure function of the lock and the current state, with reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pivot.lock import StageLock
from pivot.records import OutputKind, PathRecord


@dataclass(frozen=True)
class Current:
    """What a stage is now: definition, code and the hashes found in the workspace."""

    fingerprint: str
    code_manifest: dict[str, str]
    params: dict[str, Any] | None
    deps: dict[str, str | None]  # path -> hash (None: missing)
    outs: dict[str, tuple[str, str | None]]  # path -> (kind, hash or None when missing)
    cached: frozenset[str] = frozenset()  # lock output paths whose object is in the cache
    # Lock output paths missing from the workspace and the cache whose objects a remote holds.
    on_remote: frozenset[str] = frozenset()
    damaged: frozenset[str] = frozenset()  # lock output paths whose object the workspace changed through a link
    upstream_running: tuple[str, ...] = ()
    forced: bool = False
    notes: tuple[str, ...] = ()
    # Why the lock file cannot be read (`lock file .pivot/stages/X.lock is unreadable (...)`);
    # the lock then counts as absent: the stage runs and its lock is rewritten.
    lock_problem: str | None = None


@dataclass(frozen=True)
class Decision:
    run: bool
    reasons: tuple[str, ...] = ()
    restore: tuple[PathRecord, ...] = field(default=())  # outputs to bring back from the cache
    fetch: tuple[PathRecord, ...] = field(default=())  # of those, the ones to fetch from the remote first


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


class Policy(Enum):
    """Which rule `decide` applies to an output missing from the workspace.

    RUN (pivot run, status): it must be restorable from the cache, else the stage runs.
    VERIFY (pivot verify, pre-commit): a lock is honest whether or not its data is here (a fresh
    clone, a CI job without the cache), so a missing output that is not a metric counts as
    restorable. A metric is committed to git, so a missing one still makes the lock dishonest."""

    RUN = "run"
    VERIFY = "verify"


UP_TO_DATE = Decision(False)  # as locked: nothing to run or restore


def decide(cur: Current, lock: StageLock | None, policy: Policy = Policy.RUN) -> Decision:
    if lock is None:
        if cur.lock_problem:
            return Decision(True, (f"{cur.lock_problem}; it will be rewritten",))
        return Decision(True, ("never run: no lock file",))
    if as_locked(cur, lock):
        return UP_TO_DATE
    reasons = _definition_reasons(cur, lock)
    reasons.extend(_dep_reasons(cur, lock))
    restore: list[PathRecord] = []
    locked_outs = {r.path: r for r in lock.outs}
    for path in sorted(set(locked_outs) | set(cur.outs)):
        why = _out_reason(cur, locked_outs.get(path), path, policy)
        if isinstance(why, str):
            reasons.append(why)
        elif why is not None:
            restore.append(why)
    if reasons:
        return Decision(True, tuple(reasons))
    fetch = tuple(r for r in restore if r.path in cur.on_remote and r.path not in cur.cached)
    return Decision(False, (), tuple(restore), fetch)


def as_locked(cur: Current, lock: StageLock) -> bool:
    """Everything is as the lock says (the usual case, told by a few comparisons: what follows
    finds the same, no reason and nothing to restore, one path at a time)."""
    return (cur.fingerprint == lock.fingerprint and not cur.forced and not cur.upstream_running
            and cur.params == lock.params and {r.path: r.hash for r in lock.deps} == cur.deps
            and {r.path: (r.kind, r.hash) for r in lock.outs} == cur.outs)


def _definition_reasons(cur: Current, lock: StageLock) -> list[str]:
    reasons: list[str] = []
    if cur.forced:
        reasons.append("forced")
    if cur.fingerprint != lock.fingerprint:
        changes = code_changes(lock.code_manifest, cur.code_manifest)
        reasons.extend(f"code: {c}" for c in changes or ["fingerprint changed"])
    if cur.params != lock.params:
        reasons.extend(param_changes(lock.params, cur.params) or ["params changed"])
    reasons.extend(f"upstream stage '{u}' will run" for u in cur.upstream_running)
    return reasons


def _dep_reasons(cur: Current, lock: StageLock) -> list[str]:
    reasons: list[str] = []
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
    return reasons


def _out_reason(cur: Current, rec: PathRecord | None, path: str, policy: Policy) -> str | PathRecord | None:
    """Why output `path` makes the stage run (a reason), or the record to restore, or None."""
    if rec is None:
        return f"output '{path}' added"
    if path not in cur.outs:
        return f"output '{path}' removed from the stage"
    kind, digest = cur.outs[path]
    if kind != rec.kind:
        return f"output '{path}' type changed {rec.kind} -> {kind}"
    if digest is None:
        if path in cur.cached or path in cur.on_remote or (policy is Policy.VERIFY and kind != OutputKind.METRIC):
            return rec
        return f"output '{path}' is missing" + ("" if kind == OutputKind.METRIC else " and not in the cache")
    if digest == rec.hash:
        return None
    if path in cur.cached:  # the locked version is in the cache: restore, don't re-run
        return rec
    if path in cur.damaged:
        return (f"output '{path}' was changed in place through a link into the cache, "
                "which damaged its locked version there")
    if kind == OutputKind.METRIC:
        return f"output '{path}' was modified"
    return f"output '{path}' was modified and its locked version is not in the cache"
