"""Run records on a remote: `runs/ab/<rest of key>`, beside `files/`, as in the local cache.

Only the `Storage` primitives are used, and records travel as bytes: what they mean (and whether
one can be trusted) is pivot/runrecord.py's business, decided by the caller.

A batch lookup lists each `runs/ab/` prefix its keys need, once, all concurrently (or, from
`WHOLE_LISTING` prefixes on, the whole `runs/` folder in one recursive listing where the storage
lists recursively, as on S3), and then reads only the records that are there: a lookup of N keys
costs at most min(N, 256) listings (or one per 1,000 records on the remote) plus one read per hit.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path

from pivot.errors import NotFound
from pivot.hashing import hash_bytes
from pivot.layout import RUN_RECORDS
from pivot.remote.concurrency import bounded
from pivot.remote.failures import Step
from pivot.remote.storage import Storage

ALL_PREFIXES = [f"{i:02x}" for i in range(256)]
WHOLE_LISTING = 64  # prefixes needed from which one listing of runs/ is cheaper than one per prefix
TAIL = 30  # the name of a record in its prefix folder: the key without its first 2 characters
READS = 64  # records are small: this many reads at once


def _rel(key: str) -> str:
    return f"{RUN_RECORDS}/{key[:2]}/{key[2:]}"


async def _present(storage: Storage, keys: Iterable[str] | None, jobs: int) -> set[str]:
    """Which of `keys` (None: any key) have a record: one listing per prefix they need, or, when
    they need many, one listing of the whole `runs/` folder where the storage lists it
    recursively (an object store, a page per 1,000 records)."""
    wanted = set(keys) if keys is not None else None
    prefixes = sorted({k[:2] for k in wanted}) if wanted is not None else ALL_PREFIXES
    if wanted is not None and len(prefixes) >= WHOLE_LISTING:
        names = set(await _listing(storage, RUN_RECORDS))
        if not names:
            return set()
        folders = {n for n in names if len(n) == 2}
        if not folders:  # a recursive listing: the records' names (each a key's tail)
            return {k for k in wanted if k[2:] in names}
        prefixes = [p for p in prefixes if p in folders]  # a folder per prefix: list those needed

    async def one(prefix: str) -> list[str]:
        return [prefix + name for name in await _listing(storage, f"{RUN_RECORDS}/{prefix}")]

    found: set[str] = set()
    for _prefix, listed in await bounded(jobs, prefixes, one):
        if not isinstance(listed, NotFound):
            found.update(listed)
    return found if wanted is None else found & wanted


async def _listing(storage: Storage, rel: str) -> list[str]:
    return [name for name in await storage.list_dir(rel) if not name.startswith(".")]


async def _read(storage: Storage, keys: Iterable[str], jobs: int) -> dict[str, bytes]:
    """The records of `keys` (one read each, concurrently); a vanished one is left out."""
    async def one(key: str) -> bytes:
        return await storage.read(_rel(key))

    return {key: data for key, data in await bounded(max(jobs, READS), sorted(set(keys)), one)
            if isinstance(data, bytes)}


def lookup(storage: Storage, keys: Iterable[str], jobs: int) -> dict[str, bytes]:
    """The records the remote holds for `keys` (key -> bytes); absent keys are left out."""
    wanted = set(keys)
    if not wanted:
        return {}

    async def main() -> dict[str, bytes]:
        with Step(storage, "looking up run records"):
            return await _read(storage, await _present(storage, wanted, jobs), jobs)

    result: dict[str, bytes] = storage.run(main)
    return result


def upload(storage: Storage, records: dict[str, bytes], jobs: int, tmp_dir: Path) -> int:
    """Write the records the remote lacks (key -> bytes); returns how many were written. Each
    goes through `put` (verified, and published under its name only when complete) from a
    temporary file in `tmp_dir`. The caller uploads a record after the objects it names, so a
    reader never finds one whose outputs are still on their way."""
    if not records:
        return 0

    async def main() -> int:
        with Step(storage, "uploading run records"):
            present = await _present(storage, records, jobs)
            lacking = sorted(set(records) - present)

            async def one(key: str) -> None:
                src = tmp_dir / f"run.{key}.{os.getpid()}"
                await asyncio.to_thread(src.write_bytes, records[key])
                try:
                    await storage.put(str(src), _rel(key), hash_bytes(records[key]))
                finally:
                    src.unlink(missing_ok=True)

            await bounded(jobs, lacking, one)
            return len(lacking)

    tmp_dir.mkdir(parents=True, exist_ok=True)
    written: int = storage.run(main)
    return written


def read_all(storage: Storage, jobs: int) -> dict[str, bytes]:
    """Every record on the remote (`pivot gc --remote` decides which to keep): 256 listings."""
    async def main() -> dict[str, bytes]:
        with Step(storage, "listing run records"):
            return await _read(storage, await _present(storage, None, jobs), jobs)

    found: dict[str, bytes] = storage.run(main)
    return found


def delete(storage: Storage, keys: Iterable[str], jobs: int) -> None:
    rels = [_rel(k) for k in sorted(set(keys))]
    if not rels:
        return

    async def main() -> None:
        with Step(storage, "deleting run records"):
            batches = [rels[i:i + 1000] for i in range(0, len(rels), 1000)]
            await bounded(jobs, batches, storage.delete)

    storage.run(main)
