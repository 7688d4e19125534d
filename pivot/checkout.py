"""Bring workspace outputs in line with the lock files, from the cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from pivot import tracked
from pivot.records import OutputKind, PathRecord
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
    """Restore every cached output whose workspace content differs from its lock and (without
    `stages`) every tracked path whose content differs from its record (`pivot track`).

    An output whose current content is not in the cache is handled by `modified`; a missing
    object is reported, never guessed at."""
    result = CheckoutResult()
    names = repo.graph.select(list(stages), single=True) if stages else list(repo.graph.order)
    recs = [rec for name in names for rec in _locked_outs(repo, name) if rec.kind != OutputKind.METRIC]
    if not stages:
        recs += [t.record for t in tracked.read_all(repo.root)]
    for rec in recs:  # before writing anything: no output may lead out through a link made since
        repo.check_confined(rec.path)
    for rec in recs:
        _checkout_one(repo, rec, modified, result)
    return result


def _locked_outs(repo: Repo, name: str) -> tuple[PathRecord, ...]:
    lock = repo.read_lock(name)
    return lock.outs if lock is not None else ()


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
    if current is not None and modified is not Modified.OVERWRITE and not repo.recoverable(current):
        if modified is Modified.KEEP:
            result.kept.append((rec.path, KEPT_WHY))
            return
        saved = repo.keep_workspace_copy(rec.path, current, rec)
        if saved is not None:
            result.saved.append((rec.path, saved[0]))
    repo.restore(rec)
    result.restored.append(rec.path)

