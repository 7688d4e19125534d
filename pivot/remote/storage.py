"""The storage primitives every remote offers (`Storage`), and the local-folder backend.

A remote holds objects at the cache's layout (`files/ab/cdef…`). "Not found" is the only answer
that means absent (`NotFound`); any other failure is let through, for the caller to report.
Nothing unverified is published: an upload is hashed on the way, under a temporary name that is
renamed only on a match.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pivot.cache import Cache, copy_hashing, unlink_quiet
from pivot.errors import Corrupt, NotFound, RemoteError
from pivot.records import is_digest
from pivot.remote.index import MARKER, RemoteIndex

SMALL = 32 * 1024 * 1024  # objects up to this size are moved in one request, in memory
PART = 8 * 1024 * 1024  # multipart chunk for large objects; peak memory is a few of these
PACK_THRESHOLD = 1024 * 1024  # network remotes: objects below this size are packed on push
PACK_SIZE = 32 * 1024 * 1024  # a pack is closed once it holds this many bytes


def default_jobs(url: str = "") -> int:
    """Requests in flight: many for network storage (latency-bound); few for a local folder,
    where more threads only contend for the same directories."""
    cpus = os.cpu_count() or 2
    if "://" not in url or url.startswith("file://"):
        return min(8, max(4, cpus))
    return min(64, 8 * cpus)


def pack_options(name: str, options: dict[str, Any], threshold: int) -> tuple[int, int]:
    """Take `pack_threshold` and `pack_size` (bytes) out of a remote's options: objects smaller
    than the threshold are packed on push (0: none), `threshold` unless the options say."""
    found = []
    for key, default in (("pack_threshold", threshold), ("pack_size", PACK_SIZE)):
        value = options.pop(key, default)
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = -1
        if number < 0 or isinstance(value, bool):
            raise RemoteError(f"remote '{name}': option {key}={value!r} is not a number of bytes; "
                              f"set it with 'pivot remote add {name} URL --force -o {key}=BYTES'")
        found.append(number)
    return found[0], max(found[1], 1)


@dataclass(frozen=True)
class Listed:
    """An object seen in a listing: its size, and when it was written (None: not known)."""

    size: int
    mtime: float | None = None


class Storage:
    """Async primitives over one remote. Paths are relative to the remote's root (files/ab/…).
    Every primitive raises NotFound for an absent object and lets any other error through."""

    name: str
    url: str
    # What this clone knows the remote holds (network remotes only; see pivot/remote/index.py).
    index: RemoteIndex | None = None
    # Credentials in the remote's options: never shown in a message (pivot/remote/failures.py).
    secrets: tuple[str, ...] = ()
    # Objects below this size go into packs on push (0: every object loose; see packfile.py).
    pack_threshold: int = 0
    pack_size: int = PACK_SIZE

    def run(self, coro_fn: Callable[[], Awaitable[Any]]) -> Any:
        raise NotImplementedError

    async def generation(self, create: bool) -> str:
        """The remote's generation token ("" when it has none and `create` is false)."""
        try:
            return (await self.read(MARKER)).decode("ascii", "replace").strip()
        except NotFound:
            return await self.new_generation() if create else ""

    async def new_generation(self) -> str:
        """Write a new token: whatever any clone remembers about this remote stops being trusted."""
        token = os.urandom(16).hex()
        await self.write(MARKER, token.encode())
        return token

    async def write(self, rel: str, data: bytes) -> None: raise NotImplementedError

    async def preflight(self, writing: bool) -> None: ...
    async def size(self, rel: str) -> int: raise NotImplementedError
    async def list_dir(self, rel: str) -> dict[str, int]: raise NotImplementedError  # name -> size
    async def list_all(self) -> dict[str, Listed]: raise NotImplementedError
    async def list_entries(self, rel: str) -> dict[str, Listed]: raise NotImplementedError  # one folder
    async def read_range(self, rel: str, start: int, end: int) -> bytes: raise NotImplementedError
    async def put(self, src: str, rel: str, digest: str) -> int: raise NotImplementedError
    async def get(self, rel: str, dst: str) -> None: raise NotImplementedError
    async def read(self, rel: str) -> bytes: raise NotImplementedError
    async def delete(self, rels: list[str]) -> None: raise NotImplementedError


def _tmp_name(dest: str) -> str:
    folder, name = os.path.split(dest)
    return os.path.join(folder, f".tmp.{name}.{os.getpid()}.{threading.get_ident()}")


def _create(tmp: str) -> int:
    try:
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    except FileExistsError:  # left by a killed process with the same pid and thread id
        unlink_quiet(tmp)
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)


def _write_verified(src: str, dest: str, digest: str, tmp: str | None = None) -> int:
    """Copy src to dest (read-only), hashing on the way; a temporary name (next to dest unless
    given), renamed only on a match. A missing src is NotFound."""
    tmp = tmp or _tmp_name(dest)
    fd = _create(tmp)
    try:
        try:
            try:
                actual = copy_hashing(src, fd)
            except FileNotFoundError:
                if os.path.exists(src):
                    raise
                raise NotFound(src) from None
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if actual != digest:
            raise Corrupt(digest, actual)
        os.replace(tmp, dest)
        return size
    except BaseException:
        unlink_quiet(tmp)
        raise


def store_bytes(cache: Cache, digest: str, data: bytes, made: dict[str, bool]) -> None:
    """Put verified bytes in the cache: a temporary name in the object's folder, then rename."""
    dest = cache.path(digest)
    if not made.get(digest[:2]):
        dest.parent.mkdir(parents=True, exist_ok=True)
        made[digest[:2]] = True
    tmp = str(cache.dir / "tmp" / f"dl.{digest}.{threading.get_ident()}")  # cleared by the next fetch
    unlink_quiet(tmp)
    _publish(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444), tmp, str(dest), data)


def _publish(fd: int, tmp: str, dest: str, data: bytes) -> None:
    """Write `data` to the new file `fd` (at `tmp`), close it and rename it to `dest`; on any
    failure the temporary file goes."""
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    except BaseException:
        unlink_quiet(tmp)
        raise


class LocalStorage(Storage):
    """A folder: plain file copies in threads, each written to a temporary name and renamed.
    Besides the async primitives it has blocking ones (`put_now`, `fetch_now`), which push and
    fetch run in chunks on threads (`in_threads`): a small file costs a few system calls, and
    an event-loop round trip per file would cost more than the copy."""

    def __init__(self, name: str, url: str, path: Path, jobs: int) -> None:
        self.name, self.url, self.root, self.jobs = name, url, path, jobs
        self._made: dict[str, bool] = {}  # folders known to exist

    def run(self, coro_fn: Callable[[], Awaitable[Any]]) -> Any:
        from concurrent.futures import ThreadPoolExecutor  # lazy: start-up

        async def main() -> Any:
            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(self.jobs))
            return await coro_fn()

        return asyncio.run(main())

    async def preflight(self, writing: bool) -> None:
        if writing:
            await asyncio.to_thread((self.root / "files").mkdir, parents=True, exist_ok=True)
        elif not self.root.is_dir():
            raise RemoteError(f"remote '{self.name}': folder {self.root} does not exist; check the url in "
                              "'pivot remote list'")

    async def size(self, rel: str) -> int:
        try:
            return os.stat(self.root / rel).st_size
        except FileNotFoundError:
            raise NotFound(rel) from None

    def _scan(self, rel: str) -> dict[str, Listed]:
        """The objects in one folder of the remote (temporaries, named .tmp.*, left out)."""
        try:
            with os.scandir(self.root / rel) as it:
                return {e.name: Listed(st.st_size, st.st_mtime) for e in it if not e.name.startswith(".")
                        for st in (e.stat(),)}
        except FileNotFoundError:
            return {}

    async def list_dir(self, rel: str) -> dict[str, int]:
        return {name: e.size for name, e in (await asyncio.to_thread(self._scan, rel)).items()}

    async def list_entries(self, rel: str) -> dict[str, Listed]:
        return await asyncio.to_thread(self._scan, rel)

    async def read_range(self, rel: str, start: int, end: int) -> bytes:
        def read() -> bytes:
            try:
                with open(self.root / rel, "rb") as f:
                    f.seek(start)
                    return f.read(end - start)
            except FileNotFoundError:
                raise NotFound(rel) from None
        return await asyncio.to_thread(read)

    async def list_all(self) -> dict[str, Listed]:
        base = self.root / "files"
        if not base.is_dir():
            return {}
        found: dict[str, Listed] = {}
        for prefix in sorted(os.listdir(base)):
            listed = await asyncio.to_thread(self._scan, f"files/{prefix}")
            found.update((prefix + name, e) for name, e in listed.items() if is_digest(prefix + name))
        return found

    def _folder(self, dest: str) -> None:
        folder = os.path.dirname(dest)
        if not self._made.get(folder):
            os.makedirs(folder, exist_ok=True)
            self._made[folder] = True

    def put_now(self, src: str, rel: str, digest: str) -> int:
        dest = os.path.join(self.root, rel)
        self._folder(dest)
        return _write_verified(src, dest, digest)

    def fetch_now(self, rel: str, cache: Cache, digest: str) -> int:
        """Copy an object into the cache, verified; the temporary file is in the cache's tmp/."""
        dest = str(cache.path(digest))
        self._folder(dest)
        tmp = str(cache.dir / "tmp" / f"dl.{digest}.{threading.get_ident()}")  # cleared by the next fetch
        return _write_verified(os.path.join(self.root, rel), dest, digest, tmp)

    async def put(self, src: str, rel: str, digest: str) -> int:
        return await asyncio.to_thread(self.put_now, src, rel, digest)

    async def get(self, rel: str, dst: str) -> None:
        def copy() -> None:
            try:
                with open(self.root / rel, "rb") as src, open(dst, "wb") as out:
                    import shutil  # lazy: start-up

                    shutil.copyfileobj(src, out, 1024 * 1024)
            except FileNotFoundError:
                raise NotFound(rel) from None
        await asyncio.to_thread(copy)

    async def read(self, rel: str) -> bytes:
        try:
            return await asyncio.to_thread((self.root / rel).read_bytes)
        except FileNotFoundError:
            raise NotFound(rel) from None

    async def write(self, rel: str, data: bytes) -> None:
        """Write whole bytes under a temporary name, then rename (readers never see a part)."""
        def put() -> None:
            dest = str(self.root / rel)
            self._folder(dest)
            tmp = _tmp_name(dest)
            _publish(_create(tmp), tmp, dest, data)
        await asyncio.to_thread(put)

    async def delete(self, rels: list[str]) -> None:
        def rm() -> None:
            for rel in rels:
                unlink_quiet(self.root / rel)
        await asyncio.to_thread(rm)

    def stale_temporaries(self, older_than: float) -> list[tuple[str, int]]:
        """Temporary files (path, size) an interrupted push left, untouched for `older_than` s."""
        found = []
        base = self.root / "files"
        limit = time.time() - older_than
        packs = self.root / "packs"
        folders = [*(base.iterdir() if base.is_dir() else ()), *([packs] if packs.is_dir() else [])]
        for folder in folders:
            with os.scandir(folder) as it:
                for e in it:
                    if e.name.startswith(".tmp.") and (st := e.stat()).st_mtime < limit:
                        found.append((e.path, st.st_size))
        return found
