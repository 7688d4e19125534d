"""Garbage collection: remove the objects no kept lock file refers to, from the cache or a remote."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pivot.cache import Cache, object_relpath
from pivot.records import NeededOutput
from pivot.remote.concurrency import bounded
from pivot.remote.failures import Step
from pivot.remote.packs import learn
from pivot.remote.plan import Manifest, expand, local_manifest, remote_manifest
from pivot.remote.progress import duration, human
from pivot.remote.repack import PackPlan, apply_plan, describe_plan, plan_packs
from pivot.remote.storage import Listed, LocalStorage, Storage

Confirm = Callable[[int, int], bool]  # (objects, bytes) about to be removed -> go ahead?


@dataclass
class GcResult:
    removed: int = 0  # removed, or with dry_run / declined: would have been removed
    bytes: int = 0
    kept: int = 0
    notes: list[str] = field(default_factory=list)
    young: int = 0  # unreferenced but written less than min_age ago: kept (remote gc)
    declined: bool = False  # `confirm` said no: nothing was removed


def gc_local(cache: Cache, outputs: dict[str, NeededOutput], dry_run: bool,
             confirm: Confirm | None = None) -> GcResult:
    """Remove the cache's objects the outputs do not need; `confirm` is asked first (not on a
    dry run, nor when there is nothing to remove)."""
    result = GcResult()
    plan = expand(outputs, local_manifest(cache))
    keep = set(plan.objects)
    base = cache.dir / "files"
    if not base.is_dir():
        return result
    drop: list[str] = []
    for prefix in sorted(os.listdir(base)):
        for entry in os.scandir(base / prefix):
            if prefix + entry.name in keep:
                result.kept += 1
                continue
            result.removed += 1
            result.bytes += entry.stat().st_size
            drop.append(entry.path)
    if dry_run or not drop:
        return result
    if confirm is not None and not confirm(result.removed, result.bytes):
        result.declined = True
        return result
    for path in drop:
        os.unlink(path)
    for prefix in sorted(os.listdir(base)):
        with contextlib.suppress(OSError):  # not empty: it still holds kept objects
            os.rmdir(base / prefix)
    return result


def gc_remote(storage: Storage, cache: Cache, outputs: dict[str, NeededOutput], jobs: int, dry_run: bool,
              min_age: float = 3600.0, confirm: Confirm | None = None) -> GcResult:
    """Remove the remote's objects no kept lock refers to, except those written less than
    `min_age` seconds ago: a push in progress (from any clone) uploads objects before the lock
    that refers to them is committed anywhere. `confirm` is asked between listing and deleting."""
    result = GcResult()
    drop: list[str] = []
    present: dict[str, Listed] = {}
    packs = PackPlan()

    async def plan() -> None:
        nonlocal packs
        with Step(storage, "listing its objects"):
            await storage.preflight(writing=False)
            needed = await _referenced(storage, cache, outputs, result, jobs)
            present.update(await storage.list_all())
            drop.extend(_droppable(present, needed, min_age, result))
            packs = await plan_packs(storage, needed, min_age, jobs)
            result.notes.extend(describe_plan(packs, dry_run, min_age))
            result.kept = len(present) - len(drop) + len(packs.live)
            result.removed = len(drop) + packs.dead_objects
            result.bytes = sum(present[d].size for d in drop) + packs.dead_bytes

    async def delete() -> None:
        with Step(storage, "deleting") as step:
            if isinstance(storage, LocalStorage):
                step.doing = "clearing temporaries"
                await _clear_temporaries(storage, dry_run, result)
            if not dry_run and work:
                step.doing = "deleting"
                if storage.index is not None:
                    # First a new generation: no clone trusts its memory of this remote any more.
                    token = await storage.new_generation()
                    dropped = set(drop)
                    storage.index.add(token, [d for d in present if d not in dropped])
                step.doing = "repacking"
                result.notes.extend(await apply_plan(storage, packs, jobs))
                step.doing = "deleting"
                batches = [drop[i:i + 1000] for i in range(0, len(drop), 1000)]
                await bounded(jobs, batches, lambda b: storage.delete([object_relpath(d) for d in b]))

    storage.run(plan)
    work = bool(drop or packs.drop or packs.rewrite or packs.orphans)
    if not dry_run and work and confirm is not None and not confirm(result.removed, result.bytes):
        result.declined = True
        return result
    storage.run(delete)
    return result


async def _referenced(storage: Storage, cache: Cache, outputs: dict[str, NeededOutput],
                      result: GcResult, jobs: int) -> set[str]:
    """Every object the outputs need; a directory's manifest from the cache, else the remote."""
    manifests: dict[str, Manifest | None] = {}
    catalog = None
    for d, need in outputs.items():
        if need.is_dir and (manifests.setdefault(d, local_manifest(cache)(d))) is None:
            catalog = catalog or await learn(storage, jobs)
            manifests[d] = await remote_manifest(storage, d, catalog)
    plan = expand(outputs, lambda d: manifests.get(d))
    for path in plan.no_manifest:
        result.notes.append(f"directory '{path}': its manifest is on neither side, so its files "
                            "cannot be told apart and may be removed")
    return set(plan.objects)


def _droppable(present: dict[str, Listed], keep: set[str], min_age: float, result: GcResult) -> list[str]:
    """The unreferenced objects old enough to remove (sorted); the young ones are noted and kept."""
    unused = [d for d in present if d not in keep]
    now = time.time()
    young = [d for d in unused if (t := present[d].mtime) is not None and now - t < min_age]
    if young:
        result.young = len(young)
        result.notes.append(
            f"kept {len(young)} unreferenced object(s) ({human(sum(present[d].size for d in young))}) "
            f"written in the last {duration(min_age)}: a push in progress may need them; "
            "run gc again later, or with --min-age 0 if no one is pushing")
    return sorted(set(unused) - set(young))


async def _clear_temporaries(storage: LocalStorage, dry_run: bool, result: GcResult) -> None:
    # An hour: a push in progress keeps writing its temporaries; a killed one's stay.
    stale = storage.stale_temporaries(3600)
    if stale:
        result.notes.append(f"{'would remove' if dry_run else 'removed'} {len(stale)} temporary "
                            f"file(s) ({human(sum(n for _p, n in stale))}) left by interrupted pushes")
        if not dry_run:
            await storage.delete([p for p, _n in stale])
