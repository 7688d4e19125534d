"""Many transfers at once: coroutines a bounded number at a time, or blocking calls in thread chunks.

In both, NotFound and Corrupt are results (paired with their item), and the first other error
stops the rest and is raised.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pivot.errors import Corrupt, NotFound
from pivot.remote.storage import LocalStorage, Storage


async def in_threads(items: Iterable[Any], fn: Callable[[Any], Any]) -> list[Any]:
    """Blocking fn over items on the loop's default thread pool, in chunks, so that an item costs
    no event-loop round trip. As in `bounded`, NotFound and Corrupt are results, and the first
    other error stops the rest."""
    items = list(items)
    stop = threading.Event()

    def work(chunk: list[Any]) -> list[Any]:
        out = []
        for item in chunk:
            if stop.is_set():
                break
            try:
                out.append((item, fn(item)))
            except (NotFound, Corrupt) as exc:
                out.append((item, exc))
            except BaseException:
                stop.set()
                raise
        return out

    size = max(1, min(64, len(items) // 64))
    loop = asyncio.get_running_loop()
    futures = [loop.run_in_executor(None, work, items[i:i + size]) for i in range(0, len(items), size)]
    try:
        done: list[list[Any] | BaseException] = await asyncio.gather(*futures, return_exceptions=True)
    except asyncio.CancelledError:
        stop.set()
        raise
    chunks: list[list[Any]] = []
    for r in done:
        if isinstance(r, BaseException):
            raise r
        chunks.append(r)
    return [pair for chunk in chunks for pair in chunk]


async def bounded(jobs: int, items: Iterable[Any], fn: Callable[[Any], Awaitable[Any]]) -> list[Any]:
    """fn over items, `jobs` at a time; the first error that is not NotFound/Corrupt cancels the rest."""
    sem = asyncio.Semaphore(jobs)
    results: list[Any] = []

    async def one(item: Any) -> None:
        async with sem:
            try:
                results.append((item, await fn(item)))
            except (NotFound, Corrupt) as exc:
                results.append((item, exc))

    try:
        async with asyncio.TaskGroup() as tg:
            for item in items:
                tg.create_task(one(item))
    except BaseExceptionGroup as group:
        first = group.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return results


async def each(storage: Storage, jobs: int, items: Iterable[Any], later: Callable[[Any], Awaitable[Any]],
               now: Callable[[Any], Any]) -> list[Any]:
    """One transfer per item: `now` (blocking) in thread chunks on a folder remote, else `later`."""
    if isinstance(storage, LocalStorage):
        return await in_threads(items, now)
    return await bounded(jobs, items, later)
