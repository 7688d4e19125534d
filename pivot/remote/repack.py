"""Garbage collection of packs on a remote: packs nothing refers to are removed, and packs whose
live fraction fell below `REPACK` are rewritten with only their live objects.

Order keeps the remote consistent at every step, whatever is killed when:
1. the live objects are read (byte ranges) and verified; a damaged one keeps its pack as it is;
2. the new pack is uploaded, then its index: from here the objects are present twice;
3. only then the old index is deleted (its objects stop counting there), then the old pack.
A pack without an index (a push killed between the two uploads, or step 3 cut short) is removed
once older than the grace period, like any unreferenced object.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pivot.errors import BadPack
from pivot.hashing import hash_bytes
from pivot.records import is_digest
from pivot.remote.concurrency import bounded
from pivot.remote.packfile import PACK_DIR, Entry, Span, build, coalesce, index_rel, indexed, pack_rel
from pivot.remote.packs import GAP, READS, SPAN, batches, read_index
from pivot.remote.progress import duration
from pivot.remote.storage import Listed, Storage

REPACK = 0.5  # a pack whose live bytes are below this fraction of its size is rewritten


@dataclass
class PackPlan:
    drop: list[str] = field(default_factory=list)  # packs to remove whole (their index first)
    rewrite: dict[str, list[Entry]] = field(default_factory=dict)  # pack -> the live objects to keep
    orphans: list[str] = field(default_factory=list)  # old packs with no index
    dead_objects: int = 0  # objects the dropped and rewritten packs stop holding
    dead_bytes: int = 0
    live: set[str] = field(default_factory=set)  # objects kept in packs
    kept_packs: int = 0
    young: int = 0  # packs younger than the grace period, kept as they are
    notes: list[str] = field(default_factory=list)


async def plan_packs(storage: Storage, keep: set[str], min_age: float, jobs: int) -> PackPlan:
    """What gc does to the remote's packs, given the objects to keep."""
    plan = PackPlan()
    listed = await storage.list_entries(PACK_DIR)
    now = time.time()

    def old(entry: Listed) -> bool:
        return entry.mtime is None or now - entry.mtime >= min_age

    names = sorted(n[:-len(".pack")] for n in listed if n.endswith(".pack") and is_digest(n[:-len(".pack")]))
    with_index = indexed(listed)
    for n in names:
        if n not in with_index and old(listed[f"{n}.pack"]):
            plan.orphans.append(n)

    found = await bounded(jobs, with_index, lambda n: read_index(storage, n, index_rel(n)))
    for name, got in sorted(found, key=lambda pair: pair[0]):
        if isinstance(got, BadPack):
            plan.notes.append(f"left pack {pack_rel(name)} alone: its index was refused ({got.reason})")
            continue
        _decide(plan, name, got[0], got[1], keep, old(listed[f"{name}.pack"]))
    return plan


def _decide(plan: PackPlan, name: str, size: int, entries: list[Entry], keep: set[str], old: bool) -> None:
    live = [e for e in entries if e.digest in keep and e.digest not in plan.live]
    if not old:
        plan.young += 1
        plan.live.update(e.digest for e in entries)
        return
    live_bytes = sum(e.length for e in live)
    if live and live_bytes >= REPACK * size:
        plan.kept_packs += 1
        plan.live.update(e.digest for e in entries)
        return
    plan.live.update(e.digest for e in live)
    plan.dead_objects += len(entries) - len(live)
    plan.dead_bytes += size - live_bytes
    if live:
        plan.rewrite[name] = live
    else:
        plan.drop.append(name)


def describe_plan(plan: PackPlan, dry_run: bool, min_age: float) -> list[str]:
    """What the plan did (or would do), for gc's notes."""
    notes = list(plan.notes)
    repack, remove = ("would repack", "would remove") if dry_run else ("repacked", "removed")
    if plan.rewrite:
        moved = sum(len(v) for v in plan.rewrite.values())
        notes.append(f"{repack} {len(plan.rewrite)} mostly unused pack(s), keeping their {moved} live object(s)")
    if plan.drop:
        notes.append(f"{remove} {len(plan.drop)} pack(s) nothing refers to")
    if plan.orphans:
        notes.append(f"{remove} {len(plan.orphans)} pack(s) without an index, left by interrupted pushes")
    if plan.young:
        notes.append(f"kept {plan.young} pack(s) written in the last {duration(min_age)} as they are: "
                     "a push in progress may need them")
    return notes


async def apply_plan(storage: Storage, plan: PackPlan, jobs: int) -> list[str]:
    """Carry out the plan in the order that keeps the remote consistent (see the module's doc).
    Returns notes on packs left alone because a live object in them was damaged."""
    notes: list[str] = []
    wanted = [e for entries in plan.rewrite.values() for e in entries]
    objects: dict[str, bytes] = {}
    damaged: set[str] = set()

    async def one(span: Span) -> None:
        data = await storage.read_range(pack_rel(span.pack), span.start, span.end)
        for e in span.entries:
            chunk = data[e.offset - span.start:e.offset - span.start + e.length]
            if hash_bytes(chunk) == e.digest:
                objects[e.digest] = chunk
            else:
                damaged.add(e.pack)

    await bounded(min(jobs, READS), coalesce(wanted, GAP, SPAN), one)
    for name in sorted(damaged):
        notes.append(f"left pack {pack_rel(name)} alone: a live object in it does not match its hash")
    keep = {e.digest: objects[e.digest] for e in wanted if e.pack not in damaged and e.digest in objects}
    written = set()
    for group in batches({d: len(b) for d, b in keep.items()}, storage.pack_size):
        built = build([(d, keep[d]) for d in group])
        await storage.write(pack_rel(built.name), built.data)
        await storage.write(index_rel(built.name), built.index)
        written.add(built.name)
    gone = [n for n in [*plan.drop, *plan.rewrite] if n not in damaged and n not in written]
    await storage.delete([index_rel(n) for n in gone])
    await storage.delete([pack_rel(n) for n in [*gone, *plan.orphans]])
    return notes
