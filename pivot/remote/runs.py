"""Run records on a remote, packed: a push puts the records the remote lacks into one *run pack*
under `runs/`, in the pack format of pivot/remote/packfile.py with the run key where an object's
hash would be:

    runs/<xxh3 of the pack>.pack    the records back to back
    runs/<same>.idx                 pivot-pack-index 1 / pack <name> <size> / <key> <offset> <length>… / end <checksum>

The index is uploaded after its pack and is the only thing that makes the pack's records count;
both are immutable and named by content. Run packs live apart from the object packs in `packs/`,
so object gc never weighs records against outputs. A lookup lists `runs/` (one request per
1,000 names), reads the indexes this clone has not read before (kept, once verified, in the
cache's `tmp/runkeys/`), and reads the hits by byte range, neighbours coalesced: a thousand
records cost a few requests, not a thousand.

Only the `Storage` primitives and the pack code are used, and records travel as bytes: what they
mean (and whether one can be trusted) is pivot/runrecord.py's business, decided by the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pivot.errors import BadPack, NotFound
from pivot.layout import RUN_RECORDS
from pivot.remote.concurrency import bounded
from pivot.remote.failures import Step
from pivot.remote.packfile import Entry, Span, build, coalesce, indexed, parse_index
from pivot.remote.packs import GAP, SPAN
from pivot.remote.storage import Storage

READS = 16  # indexes and record ranges read at once


def _pack(name: str) -> str:
    return f"{RUN_RECORDS}/{name}.pack"


def _index(name: str) -> str:
    return f"{RUN_RECORDS}/{name}.idx"


class RunPacks:
    """The run packs on one remote: key -> where its record sits. Indexes are read once each
    and kept in `folder` (checked again whenever they are used)."""

    def __init__(self, storage: Storage, folder: Path, jobs: int) -> None:
        self.storage, self.folder, self.jobs = storage, folder, jobs
        self.by_pack: dict[str, list[Entry]] = {}
        self.notes: list[str] = []
        self.listed_at = -float("inf")  # time.monotonic() of the last listing
        self.where: dict[str, Entry] = {}

    async def load(self) -> dict[str, Entry]:
        import time  # lazy: start-up

        self.listed_at = time.monotonic()
        names = indexed(await self.storage.list_dir(RUN_RECORDS))
        for name, got in await bounded(max(self.jobs, READS), names, self._entries):
            if isinstance(got, list):
                self.by_pack[name] = got
            else:
                self.notes.append(f"run-record index {_index(name)} on remote '{self.storage.name}' was refused: "
                                  f"{got.reason}; its records are not used")
        where: dict[str, Entry] = {}
        for entries in self.by_pack.values():
            for e in entries:
                where.setdefault(e.digest, e)
        self.where = where
        return where

    async def _entries(self, name: str) -> list[Entry] | BadPack:
        try:
            return parse_index(name, (self.folder / f"{name}.idx").read_bytes())[1]
        except (OSError, BadPack):
            pass
        try:
            data = await self.storage.read(_index(name))
            entries = parse_index(name, data)[1]
        except BadPack as bad:
            return BadPack(_index(name), bad.reason)
        except NotFound:
            return BadPack(_index(name), "it vanished while being read")
        self.keep(name, data)
        return entries

    def keep(self, name: str, index: bytes) -> None:
        """Keep an index read or written, so that it is not read again."""
        kept = self.folder / f"{name}.idx"
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = kept.with_name(f".{kept.name}.tmp")
        tmp.write_bytes(index)
        tmp.replace(kept)


async def _read(storage: Storage, entries: Iterable[Entry], jobs: int) -> dict[str, bytes]:
    """key -> record bytes, read by coalesced byte ranges; a record whose pack vanished is left
    out. Not checked here: a record carries its own checksum (pivot/runrecord.py), so the caller
    can say why it refuses one."""
    found: dict[str, bytes] = {}

    async def one(span: Span) -> None:
        try:
            data = await storage.read_range(_pack(span.pack), span.start, span.end)
        except NotFound:
            return
        for e in span.entries:
            found[e.digest] = data[e.offset - span.start:e.offset - span.start + e.length]

    await bounded(min(jobs, READS), coalesce(list(entries), GAP, SPAN), one)
    return found


async def _put(packs: RunPacks, records: dict[str, bytes]) -> str:
    """One run pack of `records` (key -> bytes): the pack, then its index; returns its name."""
    built = build(list(records.items()))
    await packs.storage.write(_pack(built.name), built.data)
    await packs.storage.write(_index(built.name), built.index)
    packs.keep(built.name, built.index)
    return built.name


def lookup(storage: Storage, keys: Iterable[str], jobs: int, folder: Path,
           notes: list[str] | None = None, packs: RunPacks | None = None, max_age: float = 0.0) -> dict[str, bytes]:
    """The records the remote holds for `keys` (key -> bytes); absent keys are left out. A run
    pack whose index is refused adds a line naming it to `notes`. `packs`: the listing of an
    earlier lookup, used again if it is at most `max_age` seconds old (a run looking up stage
    after stage lists the remote's run packs once a second at most, not once a stage)."""
    import time  # lazy: start-up

    wanted = set(keys)
    if not wanted:
        return {}

    async def main() -> dict[str, bytes]:
        with Step(storage, "looking up run records"):
            nonlocal packs
            if packs is None or time.monotonic() - packs.listed_at > max_age:
                packs = packs or RunPacks(storage, folder, jobs)
                packs.notes.clear()
                await packs.load()
                if notes is not None:
                    notes.extend(packs.notes)
            where = packs.where
            return await _read(storage, [where[k] for k in sorted(wanted) if k in where], jobs)

    result: dict[str, bytes] = storage.run(main)
    return result


def upload(storage: Storage, records: dict[str, bytes], jobs: int, folder: Path) -> int:
    """Put the records the remote lacks (key -> bytes) into one run pack; returns how many. The
    caller uploads records after the objects they name, so a reader never finds one whose
    outputs are still on their way."""
    if not records:
        return 0

    async def main() -> int:
        with Step(storage, "uploading run records"):
            packs = RunPacks(storage, folder, jobs)
            where = await packs.load()
            lacking = {k: r for k, r in records.items() if k not in where}
            if lacking:
                await _put(packs, lacking)
            return len(lacking)

    written: int = storage.run(main)
    return written


def read_all(storage: Storage, jobs: int, folder: Path) -> dict[str, bytes]:
    """Every record on the remote (key -> bytes): `pivot gc --remote` decides which to keep."""
    async def main() -> dict[str, bytes]:
        with Step(storage, "listing run records"):
            where = await RunPacks(storage, folder, jobs).load()
            return await _read(storage, where.values(), jobs)

    found: dict[str, bytes] = storage.run(main)
    return found


def delete(storage: Storage, keys: Iterable[str], jobs: int, folder: Path) -> None:
    """Drop the records of `keys`: the run packs holding any are rewritten with their other
    records (one new pack, uploaded with its index before the old index, then the old pack, is
    deleted: a kept record is readable at every moment)."""
    drop = set(keys)
    if not drop:
        return

    async def main() -> None:
        with Step(storage, "rewriting run-record packs"):
            packs = RunPacks(storage, folder, jobs)
            await packs.load()
            touched = sorted(n for n, entries in packs.by_pack.items() if any(e.digest in drop for e in entries))
            if not touched:
                return
            keep = [e for n in touched for e in packs.by_pack[n] if e.digest not in drop]
            survivors = await _read(storage, keep, jobs)
            written = await _put(packs, survivors) if survivors else ""
            gone = [n for n in touched if n != written]
            await storage.delete([_index(n) for n in gone])
            await storage.delete([_pack(n) for n in gone])

    storage.run(main)
