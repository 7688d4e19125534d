"""Moving objects between a cache and the remote the Dask client and workers share, over the
remote's Storage primitives; every object is checked against its hash where it arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from pivot.cache import Cache, object_relpath
from pivot.errors import PivotError, RemoteError
from pivot.hashing import hash_bytes

if TYPE_CHECKING:
    from pivot.remote import Storage

SMALL = 4 * 1024 * 1024  # objects up to this size are read in one request, in memory
INLINE = 256 * 1024  # outputs up to this size also come back in the reply (no download)
INLINE_TOTAL = 2 * 1024 * 1024
TRANSFERS = 16  # requests in flight per transfer



def run_storage(storage: Storage, doing: str, coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    from pivot.remote import describe  # lazy: start-up

    try:
        return storage.run(coro_fn)
    except PivotError:
        raise
    except Exception as exc:
        raise describe(storage, exc, doing) from None


async def bounded(jobs: int, items: Iterable[Any], fn: Callable[[Any], Awaitable[Any]]) -> list[Any]:
    sem = asyncio.Semaphore(jobs)

    async def one(item: Any) -> Any:
        async with sem:
            return await fn(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


async def present(storage: Storage, digests: list[str]) -> set[str]:
    from pivot.remote import missing  # lazy: start-up

    return set(digests) - await missing(storage, digests, TRANSFERS)


async def read_verified(storage: Storage, digest: str) -> bytes:
    from pivot.remote import NotFound, read_object  # lazy: start-up

    try:
        data = await read_object(storage, digest, TRANSFERS)
    except NotFound:
        raise RemoteError(f"object {digest} is not on remote '{storage.name}'") from None
    if hash_bytes(data) != digest:
        raise RemoteError(f"object {digest} on remote '{storage.name}' does not match its hash; it was refused")
    return data


async def fetch_into(storage: Storage, cache: Cache, wanted: dict[str, int]) -> list[str]:
    """Download objects into `cache`, each verified before it enters (as `pivot fetch` does);
    returns those not found. `wanted`: hash -> size, negative when not known."""
    from pivot.remote import Progress, Transfer, download  # lazy: start-up

    lacking = {d: d for d in sorted(wanted) if not cache.has(d)}
    result = Transfer(storage.name)
    sizes = {d: n for d, n in wanted.items() if n >= 0}
    await download(storage, cache, lacking, TRANSFERS, Progress("", len(lacking), False), result, sizes)
    if result.corrupt:
        raise RemoteError(f"object {min(result.corrupt)} on remote '{storage.name}' does not match its hash; "
                          "it was refused")
    return sorted(result.missing)


async def put_objects(storage: Storage, sources: dict[str, str], manifests: set[str]) -> None:
    """Upload files, then directory manifests: a directory on the remote is complete once its
    manifest is there."""
    for batch in ([d for d in sources if d not in manifests], [d for d in sources if d in manifests]):
        await bounded(TRANSFERS, batch, lambda d: storage.put(sources[d], object_relpath(d), d))
