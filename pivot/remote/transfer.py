"""Push and fetch of cache objects, planned first, then done once, concurrently, with a progress line.

Nothing unverified enters the cache: a download goes to a temporary file, is hashed, and only a
matching object is moved into place. An upload is hashed on the way too, so a damaged local
object is never published.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pivot.cache import Cache, object_relpath, unlink_quiet
from pivot.errors import Corrupt, NotFound, PivotError
from pivot.hashing import hash_bytes, hash_file
from pivot.records import NeededOutput
from pivot.remote.concurrency import each
from pivot.remote.failures import Step, describe
from pivot.remote.packfile import Entry
from pivot.remote.packs import Catalog, learn, packable, read_packed, upload
from pivot.remote.plan import Manifest, expand, local_manifest, missing, remote_manifest
from pivot.remote.progress import Progress
from pivot.remote.storage import SMALL, LocalStorage, Storage, store_bytes


@dataclass
class Transfer:
    remote: str
    done: list[str] = field(default_factory=list)
    bytes: int = 0
    present: int = 0  # already on the other side
    missing: dict[str, str] = field(default_factory=dict)  # hash -> path: absent where it should come from
    corrupt: dict[str, str] = field(default_factory=dict)  # hash -> path: refused, bytes did not match
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0  # how long the transfer took, planning included

    def totals(self) -> dict[str, Any]:
        """Machine-readable totals (`--json`)."""
        return {"remote": self.remote, "objects": len(self.done), "bytes": self.bytes,
                "seconds": round(self.seconds, 3), "already_present": self.present,
                "missing": len(self.missing), "corrupt": len(self.corrupt),
                "failed": len(self.missing) + len(self.corrupt)}


def _naming(storage: Storage, doing: str, paths: dict[str, str],
            fn: Callable[[str], Awaitable[int]]) -> Callable[[str], Awaitable[int]]:
    """fn, whose storage failure (not NotFound/Corrupt) becomes one line naming the object, the
    output it belongs to and the remote. Retries happen below, in the storage client: what
    reaches here has exhausted them."""
    async def named(d: str) -> int:
        try:
            return await fn(d)
        except (PivotError, NotFound, Corrupt):
            raise
        except Exception as exc:
            where = f" of '{paths[d]}'" if d in paths else ""
            raise describe(storage, exc, f"{doing} object {d}{where}") from None
    return named


def _record(result: Transfer, outcomes: Iterable[tuple[str, Any]], paths: dict[str, str]) -> None:
    """Each (hash, size or NotFound/Corrupt) outcome of a transfer, into `result`."""
    for d, r in outcomes:
        if isinstance(r, NotFound):
            result.missing[d] = paths[d]
        elif isinstance(r, Corrupt):
            result.corrupt[d] = paths[d]
        else:
            result.done.append(d)
            result.bytes += r


def push(storage: Storage, cache: Cache, outputs: dict[str, NeededOutput], jobs: int,
         progress: bool | None = None) -> Transfer:
    result = Transfer(storage.name)
    start = time.monotonic()

    async def go() -> None:
        with Step(storage, "checking which objects it holds", (PivotError, NotFound, Corrupt)) as step:
            await storage.preflight(writing=True)
            index, token = storage.index, ""
            if index is not None:
                token = await storage.generation(create=True)
                whole = index.complete(token)
                if outputs and all(d in whole for d in outputs):  # a no-op: nothing to expand or ask
                    result.present = sum(whole[d] for d in outputs)
                    return
            plan = expand(outputs, local_manifest(cache))
            result.notes.extend(f"the manifest of directory '{path}' is not in the local cache"
                                for path in plan.no_manifest)
            absent = set(cache.missing(plan.objects))
            local = {d: p for d, p in plan.objects.items() if d not in absent}
            result.missing = {d: p for d, p in plan.objects.items() if d not in local}
            known = index.known(token) if index is not None else set()
            unknown = sorted(d for d in local if d not in known)
            catalog = await learn(storage, jobs, token) if unknown else Catalog()
            result.notes.extend(catalog.notes)
            lacking = await missing(storage, unknown, jobs, catalog)
            result.present = len(local) - len(lacking)
            bar = Progress(f"push to {storage.name}", len(lacking), progress)
            step.doing = "uploading"
            sent: list[str] = []  # uploaded so far: remembered even if a later upload fails
            try:
                await _upload(storage, cache, outputs, sorted(lacking), local, jobs, bar, result, sent, token)
            finally:
                if index is not None:
                    there = {d for d in local if d not in lacking} | set(sent)
                    index.add(token, there)
                    index.add_complete(token, _complete(outputs, local_manifest(cache), there))

    storage.run(go)
    result.seconds = time.monotonic() - start
    return result


def _complete(outputs: dict[str, NeededOutput], manifest: Callable[[str], Manifest | None],
              there: set[str]) -> dict[str, int]:
    """The outputs (hash -> number of objects) whose every object is on the remote."""
    whole = {}
    for d, need in outputs.items():
        entries = manifest(d) if need.is_dir else []
        if entries is None or d not in there or any(h not in there for h, _size in entries):
            continue
        whole[d] = 1 + len({h for h, _size in entries} - {d})
    return whole


async def _upload(storage: Storage, cache: Cache, outputs: dict[str, NeededOutput], lacking: list[str],
                  local: dict[str, str], jobs: int, bar: Progress, result: Transfer, sent: list[str],
                  token: str) -> None:
    """Small objects in packs (storage.pack_threshold), the others one by one; directory
    manifests after every file, so a directory on the remote is complete once its manifest is."""
    async def up_one(d: str) -> int:
        size = await storage.put(str(cache.path(d)), object_relpath(d), d)
        sent.append(d)
        bar.add(size)
        return size

    up = _naming(storage, "uploading", local, up_one)

    def up_now(d: str) -> int:
        assert isinstance(storage, LocalStorage)
        size = storage.put_now(str(cache.path(d)), object_relpath(d), d)
        sent.append(d)
        bar.add(size)
        return size

    def packed(entries: list[Entry]) -> None:
        for e in entries:
            sent.append(e.digest)
            bar.add(e.length)

    files = [d for d in lacking if not (d in outputs and outputs[d].is_dir)]
    manifests = [d for d in lacking if d in outputs and outputs[d].is_dir]
    for group in (files, manifests):
        small = packable(cache, group, storage.pack_threshold) if storage.pack_threshold else {}
        if small:
            _record(result, await upload(storage, cache, small, token, local, packed), local)
        _record(result, await each(storage, jobs, [d for d in group if d not in small], up, up_now), local)
    bar.close()


def fetch(storage: Storage, cache: Cache, outputs: dict[str, NeededOutput], jobs: int,
          progress: bool | None = None) -> Transfer:
    """Download what the cache lacks, verified. Directory manifests come first (they say which
    files the directory needs)."""
    result = Transfer(storage.name)
    start = time.monotonic()
    _clear_stale_downloads(cache)

    async def go() -> None:
        with Step(storage, "downloading", (PivotError, NotFound, Corrupt)):
            await storage.preflight(writing=False)
            dirs = [d for d, n in outputs.items() if n.is_dir and not cache.has(d)]
            bar = Progress(f"fetch from {storage.name}", len(dirs), progress)
            catalog = await learn(storage, jobs) if dirs else None
            await download(storage, cache, {d: outputs[d].path for d in dirs}, jobs, bar, result, catalog=catalog)
            plan = expand(outputs, local_manifest(cache))
            lacking = {d: plan.objects[d] for d in cache.missing(plan.objects)}
            result.present = len(plan.objects) - len(lacking) - len(result.done)
            bar.total = len(dirs) + len(lacking)
            if lacking and catalog is None:
                catalog = await learn(storage, jobs)
            await download(storage, cache, lacking, jobs, bar, result, plan.sizes, catalog)
            bar.close()
            if storage.index is not None and result.done and catalog is not None:  # a later push need not ask
                storage.index.add(catalog.token, result.done)

    storage.run(go)
    result.seconds = time.monotonic() - start
    return result


async def _download_file(storage: Storage, cache: Cache, digest: str) -> int:
    """One object through a temporary file in the cache's tmp/, hashed, then committed."""
    fd, tmp = tempfile.mkstemp(prefix="dl.", dir=cache.dir / "tmp")
    os.close(fd)
    try:
        await storage.get(object_relpath(digest), tmp)
        size = os.path.getsize(tmp)
        actual = hash_file(tmp) if size <= SMALL else await asyncio.to_thread(hash_file, tmp)
        if actual != digest:
            raise Corrupt(digest, actual)
        cache.commit_file(tmp, digest)
        return size
    finally:
        unlink_quiet(tmp)


async def download(storage: Storage, cache: Cache, wanted: dict[str, str], jobs: int, bar: Progress,
                   result: Transfer, sizes: dict[str, int] | None = None, catalog: Catalog | None = None) -> None:
    """Objects (hash -> output path) into the cache, each verified; outcomes into `result`.
    Packed ones (`catalog`, learnt here when not given) by byte ranges, the others one by one.
    `sizes`: what the manifests say, so that known-small objects are read in one request."""
    if not wanted:
        return
    (cache.dir / "tmp").mkdir(parents=True, exist_ok=True)
    made: dict[str, bool] = {}
    if catalog is None:
        catalog = await learn(storage, jobs)
    result.notes.extend(n for n in catalog.notes if n not in result.notes)
    packed = {d: catalog.where[d] for d in wanted if d in catalog.where}
    if packed:
        outcomes, notes = await read_packed(storage, cache, packed, wanted, jobs, bar.add)
        result.notes.extend(notes)
        _record(result, outcomes, wanted)
        wanted = {d: p for d, p in wanted.items() if d not in packed}

    async def down_one(d: str) -> int:
        if (sizes or {}).get(d, SMALL + 1) <= SMALL:  # known to be small: one read, in memory
            data = await storage.read(object_relpath(d))
            actual = hash_bytes(data)
            if actual != d:
                raise Corrupt(d, actual)
            store_bytes(cache, d, data, made)
            size = len(data)
        else:
            size = await _download_file(storage, cache, d)
        bar.add(size)
        return size

    down = _naming(storage, "downloading", wanted, down_one)

    def down_now(d: str) -> int:
        assert isinstance(storage, LocalStorage)
        size = storage.fetch_now(object_relpath(d), cache, d)
        bar.add(size)
        return size

    _record(result, await each(storage, jobs, sorted(wanted), down, down_now), wanted)


def _clear_stale_downloads(cache: Cache) -> None:
    """Temporary downloads of an interrupted fetch (the caller holds the project lock)."""
    tmp_dir = cache.dir / "tmp"
    if tmp_dir.is_dir():
        for p in tmp_dir.glob("dl.*"):
            unlink_quiet(p)


def missing_on_remote(storage: Storage, cache: Cache, outputs: dict[str, NeededOutput],
                      jobs: int) -> dict[str, str]:
    """Objects (hash -> output path) the remote lacks. A directory's manifest is read from the
    local cache, else from the remote (verified)."""

    async def go() -> dict[str, str]:
        with Step(storage, "checking which objects it holds"):
            await storage.preflight(writing=False)
            catalog = await learn(storage, jobs)
            manifests: dict[str, Manifest | None] = {}
            read_there = set()  # manifests just read from the remote: present, no need to ask
            for d, need in outputs.items():
                if need.is_dir:
                    manifests[d] = local_manifest(cache)(d)
                    if manifests[d] is None:
                        manifests[d] = await remote_manifest(storage, d, catalog)
                        read_there.update([d] if manifests[d] is not None else [])
            plan = expand(outputs, lambda d: manifests.get(d))
            lacking = await missing(storage, sorted(set(plan.objects) - read_there), jobs, catalog)
            if storage.index is not None:  # deleted behind Pivot's back: the next push uploads them
                storage.index.forget(lacking)
                storage.index.add(catalog.token, [d for d in plan.objects if d not in lacking])
            return {d: plan.objects[d] for d in lacking}

    found: dict[str, str] = storage.run(go)
    return found
