"""Push, fetch, pull and gc of cache objects by hash, on a local folder or any fsspec storage.

A remote holds objects at the cache's layout (`files/ab/cdef…`). Every transfer is planned
first (which objects the lock files need, which the other side lacks, asked in batches), then
done once, concurrently, with a progress line. Nothing unverified enters the cache: a download
goes to a temporary file, is hashed, and only a matching object is moved into place. An upload
is hashed on the way too, so a damaged local object is never published.

"Not found" is the only answer that means absent. Any other failure (credentials, permission,
network) stops the command with the remote's message (`RemoteError`); it is never taken as
a reason to re-upload or to call an object missing.

fsspec and s3fs are imported inside functions only, so `pivot --help` stays fast.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pivot.cache import Cache, copy_hashing, is_digest, object_relpath, unlink_quiet
from pivot.errors import PivotError, RemoteError
from pivot.hashing import hash_bytes, hash_file, parse_manifest
from pivot.remote_index import MARKER, RemoteIndex

if TYPE_CHECKING:
    from pivot.project import Project
    from pivot.records import NeededOutput as Needed
    from pivot.remote_config import RemoteSpec

SMALL = 32 * 1024 * 1024  # objects up to this size are moved in one request, in memory
PART = 8 * 1024 * 1024  # multipart chunk for large objects; peak memory is a few of these
# Listing a prefix beats asking per object once there are this many objects per prefix on average.
LIST_RATIO = 3


class NotFound(Exception):
    """The remote answered that the object does not exist."""


class Corrupt(Exception):
    """An object's bytes do not hash to its name."""

    def __init__(self, digest: str, actual: str) -> None:
        super().__init__(f"object {digest} hashes to {actual}")
        self.digest = digest


def default_jobs(url: str = "") -> int:
    """Requests in flight: many for network storage (latency-bound); few for a local folder,
    where more threads only contend for the same directories."""
    cpus = os.cpu_count() or 2
    if "://" not in url or url.startswith("file://"):
        return min(8, max(4, cpus))
    return min(64, 8 * cpus)


# -- progress ---------------------------------------------------------------------------------


class Progress:
    """A files-and-bytes line on stderr when it is a terminal; silent otherwise."""

    def __init__(self, verb: str, total: int, enabled: bool | None = None) -> None:
        self.verb, self.total = verb, total
        self.files = 0
        self.bytes = 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last = 0.0
        self._start = time.monotonic()
        self._lock = threading.Lock()  # a folder remote's transfers report from several threads

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.files += 1
            self.bytes += nbytes
            now = time.monotonic()
            if self.enabled and (now - self._last > 0.1 or self.files == self.total):
                self._last = now
                rate = self.bytes / max(now - self._start, 1e-6)
                sys.stderr.write(f"\r{self.verb}: {self.files}/{self.total} files, {human(self.bytes)} "
                                 f"({human(rate)}/s)\x1b[K")
                sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self._last:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# -- storages -----------------------------------------------------------------------------------


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
    # What this clone knows the remote holds (network remotes only; see pivot/remote_index.py).
    index: RemoteIndex | None = None

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


def _store_bytes(cache: Cache, digest: str, data: bytes, made: dict[str, bool]) -> None:
    """Put verified bytes in the cache: a temporary name in the object's folder, then rename."""
    dest = cache.path(digest)
    if not made.get(digest[:2]):
        dest.parent.mkdir(parents=True, exist_ok=True)
        made[digest[:2]] = True
    tmp = str(cache.dir / "tmp" / f"dl.{digest}.{threading.get_ident()}")  # cleared by the next fetch
    unlink_quiet(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
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
    fetch run in chunks on threads (`_in_threads`): a small file costs a few system calls, and
    an event-loop round trip per file would cost more than the copy."""

    def __init__(self, name: str, url: str, path: Path, jobs: int) -> None:
        self.name, self.url, self.root, self.jobs = name, url, path, jobs
        self._made: dict[str, bool] = {}  # folders known to exist

    def run(self, coro_fn: Callable[[], Awaitable[Any]]) -> Any:
        from concurrent.futures import ThreadPoolExecutor

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
                    import shutil

                    shutil.copyfileobj(src, out, 1024 * 1024)
            except FileNotFoundError:
                raise NotFound(rel) from None
        await asyncio.to_thread(copy)

    async def read(self, rel: str) -> bytes:
        try:
            return await asyncio.to_thread((self.root / rel).read_bytes)
        except FileNotFoundError:
            raise NotFound(rel) from None

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
        for folder in (base.iterdir() if base.is_dir() else ()):
            with os.scandir(folder) as it:
                for e in it:
                    if e.name.startswith(".tmp.") and (st := e.stat()).st_mtime < limit:
                        found.append((e.path, st.st_size))
        return found


_OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")  # a PUT is atomic per object


class FsspecStorage(Storage):
    """Any fsspec file system, driven through its async interface (sync ones are wrapped)."""

    def __init__(self, name: str, url: str, fs: Any, root: str, protocol: str) -> None:
        self.name, self.url, self.fs, self.root, self.protocol = name, url, fs, root.rstrip("/"), protocol

    def _p(self, rel: str) -> str:
        return f"{self.root}/{rel}" if self.root else rel

    def run(self, coro_fn: Callable[[], Awaitable[Any]]) -> Any:
        from fsspec.asyn import sync

        return sync(self.fs.loop, coro_fn)

    @property
    def _s3(self) -> bool:
        return self.protocol in ("s3", "s3a")

    @functools.cached_property
    def _cat_splits(self) -> bool:
        """Whether this s3fs splits whole-object reads (and takes max_concurrency to not do so)."""
        import inspect

        return "max_concurrency" in inspect.signature(self.fs._cat_file).parameters

    async def preflight(self, writing: bool) -> None:
        if self._s3:  # one cheap request that fails clearly on credentials, endpoint or bucket
            bucket = self.root.split("/", 1)[0]
            try:
                await self.fs._call_s3("head_bucket", Bucket=bucket)
            except FileNotFoundError:
                raise RemoteError(f"remote '{self.name}': bucket '{bucket}' does not exist ({self.url}); "
                                  "create it or fix the url with 'pivot remote add --force'") from None

    async def size(self, rel: str) -> int:
        try:
            info = await self.fs._info(self._p(rel))
        except FileNotFoundError:
            raise NotFound(rel) from None
        return int(info.get("size") or 0)

    async def list_dir(self, rel: str) -> dict[str, int]:
        try:
            found = await self.fs._find(self._p(rel), detail=True)
        except FileNotFoundError:
            return {}
        return {path.rsplit("/", 1)[-1]: int(info.get("size") or 0) for path, info in found.items()
                if info.get("type") != "directory"}

    async def list_all(self) -> dict[str, Listed]:
        try:
            found = await self.fs._find(self._p("files"), detail=True)
        except FileNotFoundError:
            return {}
        out = {}
        for path, info in found.items():
            parts = path.rsplit("/", 2)
            if len(parts) == 3 and is_digest(parts[1] + parts[2]):
                out[parts[1] + parts[2]] = Listed(int(info.get("size") or 0), _mtime(info))
        return out

    async def put(self, src: str, rel: str, digest: str) -> int:
        size = os.path.getsize(src)
        target = self._p(rel)
        atomic = self.protocol in _OBJECT_STORES
        dest = target if atomic else f"{target}.tmp.{os.getpid()}.{id(src)}"
        if size <= SMALL:
            with open(src, "rb") as f:
                data = f.read()
            if hash_bytes(data) != digest:
                raise Corrupt(digest, hash_bytes(data))
            await self.fs._pipe_file(dest, data)
        else:
            actual = await asyncio.to_thread(hash_file, src)
            if actual != digest:
                raise Corrupt(digest, actual)
            kwargs = {"chunksize": PART, "max_concurrency": 4} if self._s3 else {}
            await self.fs._put_file(src, dest, **kwargs)
        if not atomic:
            await self.fs._mv(dest, target)
        return size

    async def get(self, rel: str, dst: str) -> None:
        kwargs = {"max_concurrency": 1} if self._s3 else {}
        try:
            await self.fs._get_file(self._p(rel), dst, **kwargs)
        except FileNotFoundError:
            raise NotFound(rel) from None

    async def read(self, rel: str) -> bytes:
        # s3fs asks for the size first (a second request) unless told not to split the read.
        kwargs = {"max_concurrency": 1} if self._s3 and self._cat_splits else {}
        try:
            return bytes(await self.fs._cat_file(self._p(rel), **kwargs))
        except FileNotFoundError:
            raise NotFound(rel) from None

    async def delete(self, rels: list[str]) -> None:
        if rels:
            await self.fs._rm([self._p(r) for r in rels])

    async def write(self, rel: str, data: bytes) -> None:
        await self.fs._pipe_file(self._p(rel), data)


def _mtime(info: dict[str, Any]) -> float | None:
    """When a listed object was written, from whichever field this fsspec backend fills."""
    for key in ("LastModified", "mtime", "last_modified", "created"):
        value = info.get(key)
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return None


def _fs_options(protocol: str, options: dict[str, Any], jobs: int) -> dict[str, Any]:
    """Remote options as the fsspec constructor takes them; S3 gets short timeouts and few retries."""
    opts = dict(options)
    if protocol not in ("s3", "s3a"):
        return opts
    aliases = {"access_key_id": "key", "secret_access_key": "secret", "session_token": "token"}
    for ours, theirs in aliases.items():
        if ours in opts:
            opts[theirs] = opts.pop(ours)
    config = dict(opts.pop("config_kwargs", {}) or {})
    client = dict(opts.pop("client_kwargs", {}) or {})
    if "region" in opts:
        client["region_name"] = opts.pop("region")
    retries = int(opts.pop("retries", 3))
    config.setdefault("connect_timeout", float(opts.pop("connect_timeout", 10)))
    config.setdefault("read_timeout", float(opts.pop("read_timeout", 60)))
    config.setdefault("retries", {"max_attempts": max(retries, 1), "mode": "standard"})
    config.setdefault("max_pool_connections", max(jobs, 10))
    # Pivot checks every object's xxh3 itself; botocore's default CRC trailers (aws-chunked
    # bodies) cost CPU on both sides of every small request.
    config.setdefault("request_checksum_calculation", "when_required")
    config.setdefault("response_checksum_validation", "when_required")
    opts["config_kwargs"] = config
    if client:
        opts["client_kwargs"] = client
    opts["_pivot_retries"] = max(retries, 1)
    return opts


def open_storage(spec: RemoteSpec, root: Path, jobs: int) -> Storage:
    url = spec.url
    if "://" not in url or url.startswith("file://"):
        path = Path(url[len("file://"):] if url.startswith("file://") else url).expanduser()
        return LocalStorage(spec.name, url, path if path.is_absolute() else root / path, jobs)
    import fsspec
    from fsspec.core import split_protocol

    protocol, _ = split_protocol(url)
    assert protocol is not None
    opts = _fs_options(protocol, spec.options, jobs)
    retries = opts.pop("_pivot_retries", None)
    try:
        cls = fsspec.get_filesystem_class(protocol)
        fs = cls(skip_instance_cache=True, use_listings_cache=False, **opts)
    except (ImportError, ValueError, TypeError) as exc:
        raise RemoteError(f"remote '{spec.name}': cannot open {url}: {exc}") from None
    if retries is not None:
        fs.retries = retries  # s3fs's own retry loop, on top of botocore's
    if not getattr(fs, "async_impl", False):
        from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

        fs = AsyncFileSystemWrapper(fs)
    storage = FsspecStorage(spec.name, url, fs, cls._strip_protocol(url), protocol)
    where = f"{url}|{spec.options.get('endpoint_url') or ''}"
    storage.index = RemoteIndex(root / ".pivot" / "tmp" / "remotes.db", where)
    return storage


def describe(storage: Storage, exc: BaseException, doing: str) -> RemoteError:
    """One line for a failure that is not 'not found': the remote's own message and a hint."""
    if isinstance(exc, RemoteError):
        return exc
    kind = type(exc).__name__
    text = str(exc).strip() or kind
    hint = ""
    if kind in ("NoCredentialsError", "PartialCredentialsError", "NoAuthTokenError") or "credentials" in text.lower():
        hint = ("; set credentials in the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE) "
                f"or with 'pivot remote add {storage.name} URL --force -o profile=…'")
    elif isinstance(exc, PermissionError):
        hint = "; check that these credentials may read and write this bucket/prefix"
    elif kind in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError",
                  "ClientConnectorError", "ReadTimeoutError") or isinstance(exc, (ConnectionError, TimeoutError)):
        hint = "; check the network and the remote's endpoint_url ('pivot remote list')"
    if kind not in text and not isinstance(exc, OSError):
        text = f"{kind}: {text}"
    return RemoteError(f"remote '{storage.name}' ({storage.url}): {doing} failed: {text}{hint}")


class _Step:
    """What a remote operation is doing, so that a storage failure becomes one RemoteError
    naming it. `passthrough`: exceptions that keep their own meaning."""

    def __init__(self, storage: Storage, doing: str,
                 passthrough: tuple[type[BaseException], ...] = (PivotError,)) -> None:
        self.storage, self.doing, self.passthrough = storage, doing, passthrough

    def __enter__(self) -> _Step:
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, Exception) and not isinstance(exc, self.passthrough):
            raise describe(self.storage, exc, self.doing) from None


async def _in_threads(items: Iterable[Any], fn: Callable[[Any], Any]) -> list[Any]:
    """Blocking fn over items on the loop's default thread pool, in chunks, so that an item costs
    no event-loop round trip. As in `_bounded`, NotFound and Corrupt are results, and the first
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
        done = await asyncio.gather(*futures, return_exceptions=True)
    except asyncio.CancelledError:
        stop.set()
        raise
    errors = [r for r in done if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    return [pair for chunk in done for pair in chunk]


async def _each(storage: Storage, jobs: int, items: Iterable[Any], later: Callable[[Any], Awaitable[Any]],
                now: Callable[[Any], Any]) -> list[Any]:
    """One transfer per item: `now` (blocking) in thread chunks on a folder remote, else `later`."""
    if isinstance(storage, LocalStorage):
        return await _in_threads(items, now)
    return await _bounded(jobs, items, later)


async def _bounded(jobs: int, items: Iterable[Any], fn: Callable[[Any], Awaitable[Any]]) -> list[Any]:
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


# -- what the lock files need ----------------------------------------------------------------------


def needed_outputs(project: Project, stages: tuple[str, ...] = (), all_branches: bool = False,
                   all_commits: bool = False) -> dict[str, Needed]:
    """Cached outputs (by hash) of the workspace's lock files (of `stages`, else all), and with
    --all-branches / --all-commits of those revisions' lock files too."""
    from pivot import lock as lockfile
    from pivot.history import History
    from pivot.records import NeededOutput as Needed

    needed: dict[str, Needed] = {}
    names = list(stages) or sorted(p.name[:-5] for p in project.stages_dir.glob("*.lock"))
    for name in names:
        lock = lockfile.read(project.stages_dir, name)
        if lock is None:
            if stages:
                raise RemoteError(f"stage '{name}' has no lock file ({project.stages_dir.name}/{name}.lock); "
                                  "run it first ('pivot run') or check the name ('pivot list')")
            continue
        for rec in lock.outs:
            if rec.kind != "metric":
                needed.setdefault(rec.hash, Needed(rec.hash, rec.path, name, rec.is_dir, "workspace"))
    if all_branches or all_commits:
        with History(project.root) as history:
            commits = history.revisions(all_branches, all_commits)
            for digest, need in history.outputs_needed(commits).items():
                needed.setdefault(digest, need)
    return needed


@dataclass
class Expanded:
    objects: dict[str, str] = field(default_factory=dict)  # hash -> the output path it belongs to
    no_manifest: list[str] = field(default_factory=list)  # directory outputs whose manifest is nowhere
    sizes: dict[str, int] = field(default_factory=dict)  # files of directories: size from the manifest


def expand(outputs: dict[str, Needed], manifest: Callable[[str], Manifest | None]) -> Expanded:
    """Every object the outputs need: files, directory manifests and the files they list."""
    out = Expanded()
    for digest, need in outputs.items():
        out.objects.setdefault(digest, need.path)
        if need.is_dir:
            entries = manifest(digest)
            if entries is None:
                out.no_manifest.append(need.path)
                continue
            for h, size in entries:
                out.objects.setdefault(h, need.path)
                out.sizes[h] = size
    return out


Manifest = list[tuple[str, int]]  # (hash, size) of a directory's files


def local_manifest(cache: Cache) -> Callable[[str], Manifest | None]:
    def read(digest: str) -> Manifest | None:
        try:
            return [(e.hash, e.size) for e in parse_manifest(cache.path(digest).read_bytes())]
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None
    return read


# -- the operations -------------------------------------------------------------------------------


@dataclass
class Transfer:
    remote: str
    done: list[str] = field(default_factory=list)
    bytes: int = 0
    present: int = 0  # already on the other side
    missing: dict[str, str] = field(default_factory=dict)  # hash -> path: absent where it should come from
    corrupt: dict[str, str] = field(default_factory=dict)  # hash -> path: refused, bytes did not match
    notes: list[str] = field(default_factory=list)


async def _missing(storage: Storage, digests: list[str], jobs: int) -> set[str]:
    """Which of `digests` the remote lacks, in as few requests as possible: the whole listing
    when the remote is small (estimated from one prefix, as objects spread evenly over the 256
    prefixes), one listing per prefix when that is fewer requests than one question per object,
    else one question per object."""
    if not digests:
        return set()
    prefixes = sorted({d[:2] for d in digests})
    if len(digests) <= 8:
        return await _ask_each(storage, digests, jobs)
    probe = await storage.list_dir(f"files/{prefixes[0]}")
    pages = len(probe) * 256 // 1000 + 1  # a listing page holds 1,000 names on S3
    if pages * 4 <= min(len(prefixes), len(digests)):
        present = set(await storage.list_all())
    elif len(digests) >= LIST_RATIO * len(prefixes):
        listed = await _bounded(jobs, prefixes[1:], lambda p: storage.list_dir(f"files/{p}"))
        present = {p + name for p, names in [(prefixes[0], probe), *listed] for name in names}
    else:
        return await _ask_each(storage, digests, jobs)
    return {d for d in digests if d not in present}


async def _ask_each(storage: Storage, digests: list[str], jobs: int) -> set[str]:
    answers = await _bounded(jobs, digests, lambda d: storage.size(object_relpath(d)))
    return {d for d, r in answers if isinstance(r, NotFound)}


def push(storage: Storage, cache: Cache, outputs: dict[str, Needed], jobs: int,
         progress: bool | None = None) -> Transfer:
    result = Transfer(storage.name)
    plan = expand(outputs, local_manifest(cache))
    for path in plan.no_manifest:
        result.notes.append(f"the manifest of directory '{path}' is not in the local cache")
    absent = set(cache.missing(plan.objects))
    local = {d: p for d, p in plan.objects.items() if d not in absent}
    result.missing = {d: p for d, p in plan.objects.items() if d not in local}

    async def go() -> None:
        with _Step(storage, "checking which objects it holds", (PivotError, NotFound, Corrupt)) as step:
            await storage.preflight(writing=True)
            index, token, known = storage.index, "", set()
            if index is not None:
                token = await storage.generation(create=True)
                known = index.known(token)
            lacking = await _missing(storage, sorted(d for d in local if d not in known), jobs)
            result.present = len(local) - len(lacking)
            bar = Progress(f"push to {storage.name}", len(lacking), progress)
            step.doing = "uploading"

            async def up(d: str) -> int:
                size = await storage.put(str(cache.path(d)), object_relpath(d), d)
                bar.add(size)
                return size

            def up_now(d: str) -> int:
                assert isinstance(storage, LocalStorage)
                size = storage.put_now(str(cache.path(d)), object_relpath(d), d)
                bar.add(size)
                return size

            # Manifests last: a directory is complete on the remote once its manifest is there.
            files = sorted(d for d in lacking if not (d in outputs and outputs[d].is_dir))
            manifests = sorted(d for d in lacking if d in outputs and outputs[d].is_dir)
            done = await _each(storage, jobs, files, up, up_now) + await _each(storage, jobs, manifests, up, up_now)
            for d, r in done:
                if isinstance(r, Corrupt):
                    result.corrupt[d] = local[d]
                elif isinstance(r, NotFound):
                    result.missing[d] = local[d]
                else:
                    result.done.append(d)
                    result.bytes += r
            bar.close()
            if index is not None:
                uploaded = set(result.done)
                index.add(token, [d for d in local if d not in lacking or d in uploaded])

    storage.run(go)
    return result


def fetch(storage: Storage, cache: Cache, outputs: dict[str, Needed], jobs: int,
          progress: bool | None = None) -> Transfer:
    """Download what the cache lacks, verified. Directory manifests come first (they say which
    files the directory needs)."""
    result = Transfer(storage.name)
    _clear_stale_downloads(cache)

    async def go() -> None:
        with _Step(storage, "downloading", (PivotError, NotFound, Corrupt)):
            await storage.preflight(writing=False)
            dirs = [d for d, n in outputs.items() if n.is_dir and not cache.has(d)]
            bar = Progress(f"fetch from {storage.name}", len(dirs), progress)
            await _download(storage, cache, {d: outputs[d].path for d in dirs}, jobs, bar, result)
            plan = expand(outputs, local_manifest(cache))
            lacking = {d: plan.objects[d] for d in cache.missing(plan.objects)}
            result.present = len(plan.objects) - len(lacking) - len(result.done)
            bar.total = len(dirs) + len(lacking)
            await _download(storage, cache, lacking, jobs, bar, result, plan.sizes)
            bar.close()
            if storage.index is not None and result.done:  # seen there: a later push need not ask
                storage.index.add(await storage.generation(create=False), result.done)

    storage.run(go)
    return result


async def _download(storage: Storage, cache: Cache, wanted: dict[str, str], jobs: int, bar: Progress,
                    result: Transfer, sizes: dict[str, int] | None = None) -> None:
    tmp_dir = cache.dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, bool] = {}

    async def down(d: str) -> int:
        if (sizes or {}).get(d, SMALL + 1) <= SMALL:  # known to be small: one read, in memory
            data = await storage.read(object_relpath(d))
            actual = hash_bytes(data)
            if actual != d:
                raise Corrupt(d, actual)
            _store_bytes(cache, d, data, made)
            bar.add(len(data))
            return len(data)
        fd, tmp = tempfile.mkstemp(prefix="dl.", dir=tmp_dir)
        os.close(fd)
        try:
            await storage.get(object_relpath(d), tmp)
            size = os.path.getsize(tmp)
            actual = hash_file(tmp) if size <= SMALL else await asyncio.to_thread(hash_file, tmp)
            if actual != d:
                raise Corrupt(d, actual)
            cache.commit_file(tmp, d)
            bar.add(size)
            return size
        finally:
            unlink_quiet(tmp)

    def down_now(d: str) -> int:
        assert isinstance(storage, LocalStorage)
        size = storage.fetch_now(object_relpath(d), cache, d)
        bar.add(size)
        return size

    for d, r in await _each(storage, jobs, sorted(wanted), down, down_now):
        if isinstance(r, NotFound):
            result.missing[d] = wanted[d]
        elif isinstance(r, Corrupt):
            result.corrupt[d] = wanted[d]
        else:
            result.done.append(d)
            result.bytes += r


# Public names for pivot/executor/dask_transfer.py; the remote package split renames the
# functions themselves (drop these two lines at that merge).
missing = _missing
download = _download


def _clear_stale_downloads(cache: Cache) -> None:
    """Temporary downloads of an interrupted fetch (the caller holds the project lock)."""
    tmp_dir = cache.dir / "tmp"
    if tmp_dir.is_dir():
        for p in tmp_dir.glob("dl.*"):
            unlink_quiet(p)


def missing_on_remote(storage: Storage, cache: Cache, outputs: dict[str, Needed], jobs: int) -> dict[str, str]:
    """Objects (hash -> output path) the remote lacks. A directory's manifest is read from the
    local cache, else from the remote (verified)."""

    async def go() -> dict[str, str]:
        with _Step(storage, "checking which objects it holds"):
            await storage.preflight(writing=False)
            manifests: dict[str, Manifest | None] = {}
            for d, need in outputs.items():
                if need.is_dir:
                    manifests[d] = local_manifest(cache)(d)
                    if manifests[d] is None:
                        manifests[d] = await _remote_manifest(storage, d)
            plan = expand(outputs, lambda d: manifests.get(d))
            lacking = await _missing(storage, sorted(plan.objects), jobs)
            if storage.index is not None:  # deleted behind Pivot's back: the next push uploads them
                storage.index.forget(lacking)
            return {d: plan.objects[d] for d in lacking}

    return storage.run(go)  # type: ignore[no-any-return]


async def _remote_manifest(storage: Storage, digest: str) -> Manifest | None:
    try:
        data = await storage.read(object_relpath(digest))
    except NotFound:
        return None
    if hash_bytes(data) != digest:
        return None
    return [(e.hash, e.size) for e in parse_manifest(data)]


# -- gc ----------------------------------------------------------------------------------------------


@dataclass
class GcResult:
    removed: int = 0
    bytes: int = 0
    kept: int = 0
    notes: list[str] = field(default_factory=list)
    young: int = 0  # unreferenced but written less than min_age ago: kept (remote gc)


def gc_local(cache: Cache, outputs: dict[str, Needed], dry_run: bool) -> GcResult:
    result = GcResult()
    plan = expand(outputs, local_manifest(cache))
    keep = set(plan.objects)
    base = cache.dir / "files"
    if not base.is_dir():
        return result
    for prefix in sorted(os.listdir(base)):
        folder = base / prefix
        for entry in os.scandir(folder):
            digest = prefix + entry.name
            if digest in keep:
                result.kept += 1
                continue
            result.removed += 1
            result.bytes += entry.stat().st_size
            if not dry_run:
                os.unlink(entry.path)
        if not dry_run and not os.listdir(folder):
            os.rmdir(folder)
    return result


def gc_remote(storage: Storage, cache: Cache, outputs: dict[str, Needed], jobs: int, dry_run: bool,
              min_age: float = 3600.0) -> GcResult:
    """Remove the remote's objects no kept lock refers to, except those written less than
    `min_age` seconds ago: a push in progress (from any clone) uploads objects before the lock
    that refers to them is committed anywhere."""
    result = GcResult()

    async def go() -> None:
        with _Step(storage, "listing its objects") as step:
            await storage.preflight(writing=False)
            manifests: dict[str, Manifest | None] = {}
            for d, need in outputs.items():
                if need.is_dir:
                    manifests[d] = local_manifest(cache)(d) or await _remote_manifest(storage, d)
            plan = expand(outputs, lambda d: manifests.get(d))
            for path in plan.no_manifest:
                result.notes.append(f"directory '{path}': its manifest is on neither side, so its files "
                                    "cannot be told apart and may be removed")
            present = await storage.list_all()
            unused = [d for d in present if d not in plan.objects]
            now = time.time()
            young = [d for d in unused if (t := present[d].mtime) is not None and now - t < min_age]
            if young:
                result.young = len(young)
                result.notes.append(
                    f"kept {len(young)} unreferenced object(s) ({human(sum(present[d].size for d in young))}) "
                    f"written in the last {_duration(min_age)}: a push in progress may need them; "
                    "run gc again later, or with --min-age 0 if no one is pushing")
            drop = sorted(set(unused) - set(young))
            result.kept = len(present) - len(drop)
            result.removed = len(drop)
            result.bytes = sum(present[d].size for d in drop)
            if isinstance(storage, LocalStorage):
                # An hour: a push in progress keeps writing its temporaries; a killed one's stay.
                stale = storage.stale_temporaries(3600)
                if stale:
                    result.notes.append(f"{'would remove' if dry_run else 'removed'} {len(stale)} temporary "
                                        f"file(s) ({human(sum(n for _p, n in stale))}) left by interrupted pushes")
                    if not dry_run:
                        await storage.delete([p for p, _n in stale])
            if not dry_run and drop:
                step.doing = "deleting"
                if storage.index is not None:
                    # First a new generation: no clone trusts its memory of this remote any more.
                    token = await storage.new_generation()
                    dropped = set(drop)
                    storage.index.add(token, [d for d in present if d not in dropped])
                batches = [drop[i:i + 1000] for i in range(0, len(drop), 1000)]
                await _bounded(jobs, batches, lambda b: storage.delete([object_relpath(d) for d in b]))

    storage.run(go)
    return result


def _duration(seconds: float) -> str:
    return f"{int(seconds // 60)} min" if seconds >= 60 else f"{int(seconds)} s"


def summarize(paths: Iterable[str], limit: int = 5) -> str:
    unique = sorted(set(paths))
    more = len(unique) - limit
    return ", ".join(unique[:limit]) + (f" and {more} more" if more > 0 else "")
