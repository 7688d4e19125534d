"""Bring workspace outputs in line with the lock files, from the cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from pivot.hashing import parse_manifest
from pivot.records import OutputKind, PathHash, PathRecord
from pivot.repo import Repo


class Modified(Enum):
    """What checkout does with an output modified in the workspace whose current content is in
    no cache object (overwriting it would lose it)."""

    KEEP = "keep"  # leave it and report it in `kept` (pivot checkout, pivot pull)
    SAVE_TO_CACHE = "save"  # store it in the cache, report it in `saved`, then replace it (git hooks)
    OVERWRITE = "overwrite"  # replace it (--force); restoring still keeps a copy in the cache, unreported


@dataclass
class CheckoutResult:
    restored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # not in the cache
    kept: list[tuple[str, str]] = field(default_factory=list)  # not overwritten, with why
    warnings: list[str] = field(default_factory=list)
    saved: list[tuple[str, str]] = field(default_factory=list)  # (path, hash) stored before being replaced


KEPT_WHY = "it was modified and its current content is not in the cache"


def checkout(repo: Repo, stages: tuple[str, ...] = (), modified: Modified = Modified.KEEP) -> CheckoutResult:
    """Restore every cached output whose workspace content differs from its lock.

    An output whose current content is not in the cache is handled by `modified`; a missing
    object is reported, never guessed at."""
    result = CheckoutResult()
    names = repo.graph.select(list(stages), single=True) if stages else list(repo.graph.order)
    for name in names:
        lock = repo.read_lock(name)
        if lock is None:
            continue
        for rec in lock.outs:
            if rec.kind != OutputKind.METRIC:
                _checkout_one(repo, rec, modified, result)
    return result


def _checkout_one(repo: Repo, rec: PathRecord, modified: Modified, result: CheckoutResult) -> None:
    current = repo.hasher.hash_path(rec.path)
    if current is not None and current.hash == rec.hash:
        return
    damaged = repo.damaged_objects(rec, current)
    if damaged:  # its locked version is lost here: as if it were not in the cache
        result.warnings.append(repo.evict_damaged(rec.path, damaged))
        result.missing.append(rec.path)
        return
    if not repo.in_cache(rec):
        result.missing.append(rec.path)
        return
    if current is not None and modified is not Modified.OVERWRITE and not _in_cache(repo, current):
        if modified is Modified.KEEP:
            result.kept.append((rec.path, KEPT_WHY))
            return
        saved = repo.keep_workspace_copy(rec.path, current, rec)
        if saved is not None:
            result.saved.append((rec.path, saved[0]))
    repo.restore(rec)
    result.restored.append(rec.path)


def _in_cache(repo: Repo, current: PathHash) -> bool:
    """Whether the workspace version could be brought back from the cache after overwriting."""
    if repo.cache.has(current.hash):
        return True
    if current.is_dir and current.manifest is not None:
        return all(repo.cache.has(e.hash) for e in parse_manifest(current.manifest))
    return False
