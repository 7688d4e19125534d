"""Run records on a remote: `runs/ab/<rest of key>`, beside `files/`, as in the local cache.

Only the `Storage` primitives are used, and records travel as bytes: what they mean (and whether
one can be trusted) is pivot/runrecord.py's business, decided by the caller.

A batch lookup lists each `runs/ab/` prefix its keys need, once, all concurrently, and then reads
only the records that are there: a lookup of N keys costs at most min(N, 256) listings plus one
read per hit, in about two round trips.
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


def _rel(key: str) -> str:
    return f"{RUN_RECORDS}/{key[:2]}/{key[2:]}"


async def _present(storage: Storage, prefixes: Iterable[str], jobs: int) -> set[str]:
    """The keys of the records under `prefixes` (one listing each)."""
    async def one(prefix: str) -> list[str]:
        return [prefix + name for name in await storage.list_dir(f"{RUN_RECORDS}/{prefix}")
                if not name.startswith(".")]

    found: set[str] = set()
    for _prefix, names in await bounded(jobs, sorted(set(prefixes)), one):
        if not isinstance(names, NotFound):
            found.update(names)
    return found


async def _read(storage: Storage, keys: Iterable[str], jobs: int) -> dict[str, bytes]:
    """The records of `keys` (one read each, concurrently); a vanished one is left out."""
    async def one(key: str) -> bytes:
        return await storage.read(_rel(key))

    return {key: data for key, data in await bounded(jobs, sorted(set(keys)), one)
            if isinstance(data, bytes)}


def lookup(storage: Storage, keys: Iterable[str], jobs: int) -> dict[str, bytes]:
    """The records the remote holds for `keys` (key -> bytes); absent keys are left out."""
    wanted = set(keys)
    if not wanted:
        return {}

    async def main() -> dict[str, bytes]:
        with Step(storage, "looking up run records"):
            present = await _present(storage, {k[:2] for k in wanted}, jobs)
            return await _read(storage, wanted & present, jobs)

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
            present = await _present(storage, {k[:2] for k in records}, jobs)
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
            return await _read(storage, await _present(storage, ALL_PREFIXES, jobs), jobs)

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
