"""Bring workspace outputs in line with the lock files, from the cache."""

from __future__ import annotations

from dataclasses import dataclass, field

from pivot.hashing import parse_manifest
from pivot.records import PathHash
from pivot.repo import Repo


@dataclass
class CheckoutResult:
    restored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # not in the cache
    kept: list[tuple[str, str]] = field(default_factory=list)  # not overwritten, with why
    warnings: list[str] = field(default_factory=list)


def checkout(repo: Repo, stages: tuple[str, ...] = (), force: bool = False) -> CheckoutResult:
    """Restore every cached output whose workspace content differs from its lock.

    An output whose current content is not in the cache is kept (it would be lost) unless
    `force`; a missing object is reported, never guessed at."""
    result = CheckoutResult()
    names = repo.graph.select(list(stages), single=True) if stages else list(repo.graph.order)
    for name in names:
        lock = repo.read_lock(name)
        if lock is None:
            continue
        for rec in lock.outs:
            if rec.kind == "metric":
                continue
            current = repo.hasher.hash_path(rec.path)
            if current is not None and current.hash == rec.hash:
                continue
            damaged = repo.damaged_objects(rec, current)
            if damaged:  # its locked version is lost here: as if it were not in the cache
                result.warnings.append(repo.evict_damaged(rec.path, damaged))
                result.missing.append(rec.path)
                continue
            if not repo.in_cache(rec):
                result.missing.append(rec.path)
                continue
            if current is not None and not force and not _in_cache(repo, current):
                result.kept.append((rec.path, "it was modified and its current content is not in the cache"))
                continue
            repo.restore(rec)
            result.restored.append(rec.path)
    return result


def _in_cache(repo: Repo, current: PathHash) -> bool:
    """Whether the workspace version could be brought back from the cache after overwriting."""
    if repo.cache.has(current.hash):
        return True
    if current.is_dir and current.manifest is not None:
        return all(repo.cache.has(e.hash) for e in parse_manifest(current.manifest))
    return False
