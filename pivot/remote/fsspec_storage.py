"""Remotes on any fsspec file system (S3 through s3fs, GCS, Azure, SFTP…), driven asynchronously.

fsspec and s3fs are imported only when such a remote is opened, so `pivot --help` stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pivot.errors import Corrupt, NotFound, RemoteError
from pivot.hashing import hash_bytes, hash_file, hasher
from pivot.layout import TMP_DIR
from pivot.records import is_digest
from pivot.remote.index import RemoteIndex
from pivot.remote.storage import PACK_THRESHOLD, PART, SMALL, Listed, Storage, pack_options
from pivot.remote_config import scrub, secret_values

if TYPE_CHECKING:
    from pivot.remote_config import RemoteSpec

PARTS_IN_FLIGHT = 4  # parts of one large upload sent at once (memory: this many PART buffers)
_OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")  # a PUT is atomic per object


class AsyncFs:
    """fsspec's async API, in one place. An async fsspec file system offers its coroutines under
    names with a leading underscore (`_info`, `_find`, `_pipe_file`, …): that is fsspec's
    documented async interface (https://filesystem-spec.readthedocs.io/en/latest/async.html),
    not private state. Each call below therefore carries one targeted `noqa: SLF001`."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    @property
    def loop(self) -> Any:
        return self.fs.loop

    @functools.cached_property
    def cat_takes_max_concurrency(self) -> bool:
        """Whether this s3fs splits whole-object reads (and takes max_concurrency to not do so)."""
        import inspect  # lazy: start-up

        return "max_concurrency" in inspect.signature(self.fs._cat_file).parameters  # noqa: SLF001 - fsspec async API

    async def call_s3(self, method: str, **kwargs: Any) -> Any:
        return await self.fs._call_s3(method, **kwargs)  # noqa: SLF001 - s3fs's async client call

    async def info(self, path: str) -> dict[str, Any]:
        return dict(await self.fs._info(path))  # noqa: SLF001 - fsspec async API

    async def find(self, path: str) -> dict[str, dict[str, Any]]:
        return dict(await self.fs._find(path, detail=True))  # noqa: SLF001 - fsspec async API

    async def pipe_file(self, path: str, data: bytes) -> None:
        await self.fs._pipe_file(path, data)  # noqa: SLF001 - fsspec async API

    async def put_file(self, src: str, path: str, **kwargs: Any) -> None:
        await self.fs._put_file(src, path, **kwargs)  # noqa: SLF001 - fsspec async API

    async def get_file(self, path: str, dst: str, **kwargs: Any) -> None:
        await self.fs._get_file(path, dst, **kwargs)  # noqa: SLF001 - fsspec async API

    async def cat_file(self, path: str, **kwargs: Any) -> bytes:
        return bytes(await self.fs._cat_file(path, **kwargs))  # noqa: SLF001 - fsspec async API

    async def mv(self, src: str, dst: str) -> None:
        await self.fs._mv(src, dst)  # noqa: SLF001 - fsspec async API

    async def rm(self, paths: list[str]) -> None:
        await self.fs._rm(paths)  # noqa: SLF001 - fsspec async API


class FsspecStorage(Storage):
    """Any fsspec file system, driven through its async interface (sync ones are wrapped)."""

    def __init__(self, name: str, url: str, fs: Any, root: str, protocol: str) -> None:
        self.name, self.url, self.root, self.protocol = name, url, root.rstrip("/"), protocol
        self.fs = fs
        self.afs = AsyncFs(fs)

    def _p(self, rel: str) -> str:
        return f"{self.root}/{rel}" if self.root else rel

    def run(self, coro_fn: Callable[[], Awaitable[Any]]) -> Any:
        from fsspec.asyn import sync  # lazy: fsspec is heavy

        return sync(self.afs.loop, coro_fn)

    @property
    def _s3(self) -> bool:
        return self.protocol in ("s3", "s3a")

    async def preflight(self, writing: bool) -> None:
        if self._s3:  # one cheap request that fails clearly on credentials, endpoint or bucket
            bucket = self.root.split("/", 1)[0]
            try:
                await self.afs.call_s3("head_bucket", Bucket=bucket)
            except FileNotFoundError:
                raise RemoteError(f"remote '{self.name}': bucket '{bucket}' does not exist ({self.url}); "
                                  "create it or fix the url with 'pivot remote add --force'") from None

    async def size(self, rel: str) -> int:
        try:
            info = await self.afs.info(self._p(rel))
        except FileNotFoundError:
            raise NotFound(rel) from None
        return int(info.get("size") or 0)

    async def list_dir(self, rel: str) -> dict[str, int]:
        found = await self._listing(rel)
        return {path.rsplit("/", 1)[-1]: int(info.get("size") or 0) for path, info in found.items()
                if info.get("type") != "directory"}

    async def _listing(self, rel: str) -> dict[str, dict[str, Any]]:
        """Every object under the folder `rel` (path -> info). On S3 one ListObjectsV2 request per
        1,000 keys; s3fs's `find` adds a HEAD and a second listing when the folder is empty."""
        if not self._s3:
            try:
                return await self.afs.find(self._p(rel))
            except FileNotFoundError:
                return {}
        bucket, _, key = self._p(rel).partition("/")
        prefix = f"{key}/" if key else ""
        found: dict[str, dict[str, Any]] = {}
        more: dict[str, Any] = {}
        while True:
            page = await self.afs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, **more)
            for item in page.get("Contents", ()):
                found[f"{bucket}/{item['Key']}"] = {"size": item.get("Size", 0), "type": "file",
                                                    "LastModified": item.get("LastModified")}
            if not page.get("IsTruncated"):
                return found
            more = {"ContinuationToken": page["NextContinuationToken"]}

    async def list_entries(self, rel: str) -> dict[str, Listed]:
        found = await self._listing(rel)
        return {path.rsplit("/", 1)[-1]: Listed(int(info.get("size") or 0), _mtime(info))
                for path, info in found.items() if info.get("type") != "directory"}

    async def read_range(self, rel: str, start: int, end: int) -> bytes:
        try:
            return await self.afs.cat_file(self._p(rel), start=start, end=end)
        except FileNotFoundError:
            raise NotFound(rel) from None

    async def list_all(self) -> dict[str, Listed]:
        found = await self._listing("files")
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
            await self.afs.pipe_file(dest, data)
        elif self._s3:
            await self._put_parts(src, dest, digest)
        else:
            actual = await asyncio.to_thread(hash_file, src)
            if actual != digest:
                raise Corrupt(digest, actual)
            await self.afs.put_file(src, dest)
        if not atomic:
            await self.afs.mv(dest, target)
        return size

    async def _put_parts(self, src: str, target: str, digest: str) -> None:
        """A large file as an S3 multipart upload, hashed on the way in one read: the next part is
        read while up to PARTS_IN_FLIGHT others upload (memory: that many PART-sized buffers). The
        upload is completed only when the bytes sent hash to `digest`; otherwise it is aborted."""
        bucket, _, key = target.partition("/")
        upload = (await self.afs.call_s3("create_multipart_upload", Bucket=bucket, Key=key))["UploadId"]
        h = hasher()
        etags: dict[int, str] = {}
        room = asyncio.Semaphore(PARTS_IN_FLIGHT)

        async def send(number: int, chunk: bytes) -> None:
            try:
                answer = await self.afs.call_s3("upload_part", Bucket=bucket, Key=key, UploadId=upload,
                                                PartNumber=number, Body=chunk)
                etags[number] = answer["ETag"]
            finally:
                room.release()

        try:
            with open(src, "rb") as f:
                async with asyncio.TaskGroup() as tg:
                    for number in itertools.count(1):
                        await room.acquire()
                        chunk = await asyncio.to_thread(f.read, PART)
                        if not chunk:
                            room.release()
                            break
                        h.update(chunk)
                        tg.create_task(send(number, chunk))
            if h.hexdigest() != digest:
                raise Corrupt(digest, h.hexdigest())
            parts = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
            await self.afs.call_s3("complete_multipart_upload", Bucket=bucket, Key=key, UploadId=upload,
                                   MultipartUpload={"Parts": parts})
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await self.afs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload)
            if isinstance(exc, BaseExceptionGroup):
                raise exc.exceptions[0] from None
            raise

    async def get(self, rel: str, dst: str) -> None:
        kwargs = {"max_concurrency": 1} if self._s3 else {}
        try:
            await self.afs.get_file(self._p(rel), dst, **kwargs)
        except FileNotFoundError:
            raise NotFound(rel) from None

    async def read(self, rel: str) -> bytes:
        # s3fs asks for the size first (a second request) unless told not to split the read.
        kwargs = {"max_concurrency": 1} if self._s3 and self.afs.cat_takes_max_concurrency else {}
        try:
            return await self.afs.cat_file(self._p(rel), **kwargs)
        except FileNotFoundError:
            raise NotFound(rel) from None

    async def delete(self, rels: list[str]) -> None:
        if rels:
            await self.afs.rm([self._p(r) for r in rels])

    async def write(self, rel: str, data: bytes) -> None:
        """Whole bytes at `rel`: one PUT on an object store (atomic there), else a temporary
        name renamed into place."""
        target = self._p(rel)
        if self.protocol in _OBJECT_STORES:
            await self.afs.pipe_file(target, data)
            return
        tmp = f"{target}.tmp.{os.getpid()}.{id(data)}"
        await self.afs.pipe_file(tmp, data)
        await self.afs.mv(tmp, target)


def _mtime(info: dict[str, Any]) -> float | None:
    """When a listed object was written, from whichever field this fsspec backend fills."""
    for key in ("LastModified", "mtime", "last_modified", "created"):
        value = info.get(key)
        if value is not None and hasattr(value, "timestamp"):
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
    # Retries (docs/remotes.md, "Faults"): botocore's "standard" mode retries connection resets,
    # timeouts, 500/502/503/504 and throttling (SlowDown), never a 403/404, with full-jitter
    # exponential backoff (rand(0,1) x min(2^i x scale, 20 s)): `retries` of them after the first
    # attempt. s3fs's own loop adds one more round (2 attempts) for what botocore cannot see (a
    # body cut short while it is read); retries=0 turns both off.
    retries = max(int(opts.pop("retries", 3)), 0)
    config.setdefault("connect_timeout", float(opts.pop("connect_timeout", 10)))
    config.setdefault("read_timeout", float(opts.pop("read_timeout", 60)))
    config.setdefault("retries", {"total_max_attempts": retries + 1, "mode": "standard"})
    config.setdefault("max_pool_connections", max(jobs, 10))
    # Pivot checks every object's xxh3 itself; botocore's default CRC trailers (aws-chunked
    # bodies) cost CPU on both sides of every small request.
    config.setdefault("request_checksum_calculation", "when_required")
    config.setdefault("response_checksum_validation", "when_required")
    opts["config_kwargs"] = config
    if client:
        opts["client_kwargs"] = client
    opts["_pivot_retries"] = 2 if retries else 1
    return opts


def open_fsspec(spec: RemoteSpec, root: Path, jobs: int) -> FsspecStorage:
    """The storage of a remote whose url names an fsspec protocol (s3://, gs://, …)."""
    import fsspec  # lazy: fsspec is heavy
    from fsspec.core import split_protocol  # lazy: fsspec is heavy

    url = spec.url
    protocol, _ = split_protocol(url)
    assert protocol is not None
    options = dict(spec.options)
    packing = pack_options(spec.name, options, PACK_THRESHOLD)
    opts = _fs_options(protocol, options, jobs)
    retries = opts.pop("_pivot_retries", None)
    try:
        cls = fsspec.get_filesystem_class(protocol)
        fs = cls(skip_instance_cache=True, use_listings_cache=False, **opts)
    except (ImportError, ValueError, TypeError) as exc:
        raise RemoteError(f"remote '{spec.name}': cannot open {url}: "
                          f"{scrub(str(exc), secret_values(spec.options))}") from None
    if retries is not None:
        fs.retries = retries  # s3fs's own retry loop (attempts), on top of botocore's
    if not getattr(fs, "async_impl", False):
        from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper  # lazy: fsspec is heavy

        fs = AsyncFileSystemWrapper(fs)
    # The bucket/prefix part of the url, as fsspec spells it (its documented classmethod).
    storage = FsspecStorage(spec.name, url, fs, cls._strip_protocol(url), protocol)
    where = f"{url}|{spec.options.get('endpoint_url') or ''}"
    storage.index = RemoteIndex(root / TMP_DIR / "remotes.db", where)
    storage.secrets = tuple(secret_values(spec.options))
    storage.pack_threshold, storage.pack_size = packing
    return storage
