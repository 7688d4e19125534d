"""Packs on a remote: which ones hold what (`learn`), uploading new ones (`upload`), and reading
objects out of them by byte range (`read_packed`). The format is in pivot/remote/packfile.py.

A pack counts only while both its `.pack` and its `.idx` are listed: the listing (one request
per 1,000 names) is asked every time the packs matter, so a pack deleted by hand is noticed; the
indexes themselves are immutable, so an index read once is remembered (pivot/remote/index.py)
and not read again while the remote's generation stays the same.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pivot.cache import Cache, object_relpath
from pivot.errors import BadPack, Corrupt, NotFound, PivotError
from pivot.hashing import hash_bytes
from pivot.remote.concurrency import bounded
from pivot.remote.failures import describe
from pivot.remote.packfile import (
    PACK_DIR,
    Built,
    Entry,
    Span,
    build,
    coalesce,
    index_rel,
    indexed,
    pack_rel,
    parse_index,
)
from pivot.remote.storage import Storage, store_bytes

GAP = 256 * 1024  # skipped bytes between two wanted objects that still cost less than a second read
SPAN = 8 * 1024 * 1024  # one ranged read holds at most this many bytes
READS = 8  # ranged reads in flight (memory: READS x SPAN at most)
PACKS_IN_FLIGHT = 2  # packs assembled or uploading at once (memory: about 2 x pack_size)

Outcome = tuple[str, Any]  # (hash, size | NotFound | Corrupt)


@dataclass
class Catalog:
    """The objects the remote holds in packs (hash -> where), and indexes it refused."""

    where: dict[str, Entry] = field(default_factory=dict)
    packs: dict[str, int] = field(default_factory=dict)  # name -> size, listed with their index
    notes: list[str] = field(default_factory=list)
    token: str = ""


async def learn(storage: Storage, jobs: int, token: str | None = None) -> Catalog:
    """The packs the remote holds now: one listing of `packs/`, and a read of each index this
    clone has not read before under the remote's generation (`token`; read when not given). An
    index that does not parse is left out, with a note naming it."""
    index = storage.index
    cat = Catalog()
    if index is not None:
        cat.token = token if token is not None else await storage.generation(create=False)
    names = set(indexed(await storage.list_dir(PACK_DIR)))
    known = index.packs(cat.token) if index is not None and cat.token else {}
    if known:
        located = index.located() if index is not None else {}
        cat.where.update((d, e) for d, e in located.items() if e.pack in names)
        cat.packs.update((n, size) for n, size in known.items() if n in names)

    for name, got in await bounded(jobs, sorted(names - set(known)), lambda n: read_index(storage, n, index_rel(n))):
        if isinstance(got, BadPack):
            cat.notes.append(f"pack index {index_rel(name)} on remote '{storage.name}' was refused: {got.reason}; "
                             "its objects count as absent (a push uploads them again)")
            continue
        size, entries = got
        cat.packs[name] = size
        for e in entries:
            cat.where.setdefault(e.digest, e)
        if index is not None and cat.token:
            index.add_pack(cat.token, name, size, entries)
    return cat


async def read_index(storage: Storage, name: str, rel: str) -> tuple[int, list[Entry]] | BadPack:
    """The index of pack `name` at `rel`, parsed (pack size, entries), or why it is refused."""
    try:
        return parse_index(name, await storage.read(rel))
    except BadPack as bad:
        return BadPack(rel, bad.reason)
    except NotFound:
        return BadPack(rel, "it vanished while being read")


async def read_object(storage: Storage, digest: str, jobs: int) -> bytes:
    """One object's bytes, loose or packed (not verified here); NotFound when neither."""
    try:
        return await storage.read(object_relpath(digest))
    except NotFound:
        entry = (await learn(storage, jobs)).where.get(digest)
        if entry is None:
            raise
        return await storage.read_range(pack_rel(entry.pack), entry.offset, entry.offset + entry.length)


def _assemble(cache: Cache, digests: list[str]) -> tuple[Built | None, list[Outcome]]:
    """A pack of the cache's objects `digests`, each read and checked against its hash: a missing
    one is NotFound, a damaged one Corrupt (neither goes into the pack)."""
    good: list[tuple[str, bytes]] = []
    outcomes: list[Outcome] = []
    for d in digests:
        try:
            with open(cache.path(d), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            outcomes.append((d, NotFound(d)))
            continue
        actual = hash_bytes(data)
        if actual != d:
            outcomes.append((d, Corrupt(d, actual)))
            continue
        good.append((d, data))
        outcomes.append((d, len(data)))
    return (build(good) if good else None), outcomes


def batches(sizes: dict[str, int], limit: int) -> list[list[str]]:
    """The objects (hash -> size) in groups of at most `limit` bytes each (an object is never split)."""
    out: list[list[str]] = []
    group: list[str] = []
    total = 0
    for d in sorted(sizes):
        if group and total + sizes[d] > limit:
            out.append(group)
            group, total = [], 0
        group.append(d)
        total += sizes[d]
    if group:
        out.append(group)
    return out


async def upload(storage: Storage, cache: Cache, sizes: dict[str, int], token: str, paths: dict[str, str],
                 sent: Callable[[list[Entry]], None]) -> list[Outcome]:
    """Pack the cache's objects (hash -> size) and upload each pack completely before its index;
    `sent` hears of each pack's objects once its index is up. Outcomes per object."""

    async def one(group: list[str]) -> list[Outcome]:
        built, outcomes = await asyncio.to_thread(_assemble, cache, group)
        if built is None:
            return outcomes
        try:
            await storage.write(pack_rel(built.name), built.data)
            await storage.write(index_rel(built.name), built.index)
        except (PivotError, NotFound, Corrupt):
            raise
        except Exception as exc:
            owners = sorted({paths[d] for d in group if d in paths})
            of = f" (objects of {', '.join(repr(p) for p in owners[:3])})" if owners else ""
            raise describe(storage, exc, f"uploading pack {built.name}{of}") from None
        if storage.index is not None:
            storage.index.add_pack(token, built.name, len(built.data), built.entries)
        sent(built.entries)
        return outcomes

    done = await bounded(PACKS_IN_FLIGHT, batches(sizes, storage.pack_size), one)
    return [o for _group, outcomes in done for o in outcomes]


async def read_packed(storage: Storage, cache: Cache, wanted: dict[str, Entry], paths: dict[str, str],
                      jobs: int, added: Callable[[int], None]) -> tuple[list[Outcome], list[str]]:
    """Objects out of packs into the cache: byte ranges read (neighbours coalesced), each object
    hashed before it enters. Outcomes per object, and a note for each pack that held a damaged one."""
    made: dict[str, bool] = {}
    notes: list[str] = []
    (cache.dir / "tmp").mkdir(parents=True, exist_ok=True)

    def store(span_start: int, data: bytes, entries: tuple[Entry, ...]) -> list[Outcome]:
        out: list[Outcome] = []
        for e in entries:
            chunk = data[e.offset - span_start:e.offset - span_start + e.length]
            actual = hash_bytes(chunk)
            if actual != e.digest:
                out.append((e.digest, Corrupt(e.digest, actual)))
                continue
            store_bytes(cache, e.digest, chunk, made)
            out.append((e.digest, len(chunk)))
            added(len(chunk))
        return out

    async def one(span: Span) -> list[Outcome]:
        try:
            data = await storage.read_range(pack_rel(span.pack), span.start, span.end)
        except NotFound:
            return [(e.digest, NotFound(e.digest)) for e in span.entries]
        except (PivotError, Corrupt):
            raise
        except Exception as exc:
            owners = sorted({paths[e.digest] for e in span.entries if e.digest in paths})
            of = f" (objects of {', '.join(repr(p) for p in owners[:3])})" if owners else ""
            raise describe(storage, exc, f"reading pack {span.pack}{of}") from None
        outcomes = await asyncio.to_thread(store, span.start, data, span.entries)
        if any(isinstance(r, Corrupt) for _d, r in outcomes):
            notes.append(f"pack {pack_rel(span.pack)} on remote '{storage.name}' holds damaged objects; "
                         "they were refused")
        return outcomes

    spans = coalesce(list(wanted.values()), GAP, SPAN)
    done = await bounded(min(jobs, READS), spans, one)
    return [o for _span, outcomes in done for o in outcomes], sorted(set(notes))


def packable(cache: Cache, digests: list[str], threshold: int) -> dict[str, int]:
    """The objects (hash -> size) small enough to pack; a missing one is left to the loose path,
    which reports it."""
    out = {}
    for d in digests:
        try:
            size = os.stat(cache.path(d)).st_size
        except FileNotFoundError:
            continue
        if size < threshold:
            out[d] = size
    return out
