"""Run stages on a Dask cluster (`pivot run --executor dask --scheduler ADDRESS`), with the
remote as the only thing the workers share with this machine.

What goes where, for one stage:

    client (this process)                          worker (any machine of the cluster)
    ---------------------                          -----------------------------------
    fingerprint, decide (as for the local pool)
    deps: small ones into the task; others
      uploaded if the remote lacks them      -->   remote
    send a WorkerTask: the stage's code by
      value (cloudpickle), params, deps'
      hashes, the package versions the code
      uses, the remote's url and options     -->   refuse it if a package version differs;
                                                   fetch the deps by hash (task or remote)
                                                   into a private scratch folder; call the
                                                   stage there, output captured; hash the
                                                   outputs; upload the large ones  --> remote
    check the reply belongs to the code sent <--   WorkerReply: hashes, timings, output,
                                                     small outputs' bytes
    bring outputs into the cache by hash
      (unless --no-download), write the lock;
      upload the small ones in the background --> remote

With --no-download the worker uploads every output before it answers, and the lock is
written once they are on the remote. Every object is checked against its hash where it
arrives. Small objects travel inside the task and the reply because a remote round trip per
stage is what dominates a short stage's cost; large ones go through the remote.

Code goes by value: every module of the project (a file under the root) is registered with
cloudpickle's `register_pickle_by_value`, so the stage function, the helpers, classes and
constants it reaches travel inside the task, and the worker needs no checkout, only the same
third-party packages. Those are checked per stage: the fingerprint manifest lists each
installed package the code reaches (`pkg:numpy: 1.26.4`); the worker compares them (and the
Python, pivot and cloudpickle versions) with its own and refuses the stage if one differs.

A worker that dies mid-stage is Dask's business: the scheduler runs the task again elsewhere
(`distributed.scheduler.allowed-failures`). The client gets one answer per task, under a key
unique to this submission, and writes the lock from that answer only. Objects an abandoned
attempt uploaded are content-addressed, so they are harmless.

Nothing here imports dask or distributed at module level: workers import this module to run
`run_on_worker`, and `pivot run` with the local pool never imports it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pivot import atomic
from pivot.cache import Cache, object_relpath
from pivot.errors import PivotError, RemoteError
from pivot.executor import OutSpec, StageResult, StageTask
from pivot.hashing import hash_bytes, hash_file, manifest_bytes, parse_manifest
from pivot.records import DirEntry, PathRecord

if TYPE_CHECKING:
    from pivot.project import Project
    from pivot.remote import Storage
    from pivot.remote_config import RemoteSpec

CONNECT_TIMEOUT = 5.0  # seconds to reach the scheduler before giving up
SMALL = 4 * 1024 * 1024  # objects up to this size are read in one request, in memory
INLINE = 256 * 1024  # outputs up to this size also come back in the reply (no download)
INLINE_TOTAL = 2 * 1024 * 1024
TRANSFERS = 16  # requests in flight per transfer


class DaskError(PivotError):
    """`--executor dask` cannot be used: distributed missing, no scheduler, no remote."""


# -- settings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DaskSettings:
    scheduler: str
    remote: RemoteSpec
    download: bool = True
    connect_timeout: float = CONNECT_TIMEOUT


def resolve_settings(project: Project, scheduler: str | None, remote: str | None, download: bool,
                     config: dict[str, Any]) -> DaskSettings:
    """Check everything that can be checked without the cluster, each with how to fix it."""
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        raise DaskError("--executor dask needs the distributed package on this machine and on the workers; "
                        "install it with: pip install 'pivot[dask]'")
    address = scheduler or config.get("scheduler")
    if not isinstance(address, str) or not address.strip():
        raise DaskError("--executor dask needs the scheduler's address; pass --scheduler tcp://HOST:8786 or set "
                        "executor.scheduler in .pivot/config.yaml")
    from pivot import remote_config

    if not project.config.remotes:
        raise DaskError("--executor dask needs a remote: it is the cache this machine and the workers share; "
                        "add one with 'pivot remote add NAME URL --default' (for example s3://bucket/prefix)")
    spec = remote_config.resolve(project.config, remote or config.get("remote"))
    url = spec.url
    if "://" not in url or url.startswith("file://"):  # a shared folder: workers need its absolute path
        path = Path(url[len("file://"):] if url.startswith("file://") else url).expanduser()
        spec = type(spec)(spec.name, str(path if path.is_absolute() else project.root / path), spec.options)
    timeout = config.get("connect_timeout", CONNECT_TIMEOUT)
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise DaskError("executor.connect_timeout in .pivot/config.yaml must be a number of seconds")
    return DaskSettings(address.strip(), spec, download, float(timeout))


# -- what travels ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerTask:
    """One stage, as sent to a worker. Everything is plain data except `code`, the cloudpickled
    (function, params, modules imported inside functions)."""

    key: str
    name: str
    code: bytes
    code_digest: str  # xxh3 of `code`: the worker says which code it ran
    fingerprint: str
    versions: tuple[tuple[str, str], ...]  # (distribution or "python", version) the code needs
    outs: tuple[OutSpec, ...]
    deps: tuple[PathRecord, ...]
    inputs: tuple[PathRecord, ...]  # IncrementalOuts' starting versions: writable copies
    manifests: tuple[tuple[str, bytes], ...]  # directory deps' manifests
    sizes: tuple[tuple[str, int], ...]  # object sizes, where known
    remote: RemoteSpec
    sources: tuple[tuple[str, str], ...] = ()  # user files' text, so tracebacks show the lines
    blobs: tuple[tuple[str, bytes], ...] = ()  # small deps, sent along (checked by hash all the same)
    download: bool = True  # the client takes small outputs from the reply and uploads them itself


@dataclass(frozen=True)
class WorkerReply:
    result: StageResult
    fingerprint: str = ""
    code_digest: str = ""
    sizes: tuple[tuple[str, int], ...] = ()  # every object of the outputs
    manifests: tuple[tuple[str, bytes], ...] = ()  # directory outputs
    blobs: tuple[tuple[str, bytes], ...] = ()  # small objects, so the client need not download them
    uploaded: tuple[str, ...] = ()  # objects the worker put on the remote (the rest: the client will)


# -- the client side ---------------------------------------------------------------------------------


class DaskExecutor:
    """Submits stages to a Dask scheduler; the remote carries deps and outputs both ways."""

    remote = True

    def __init__(self, settings: DaskSettings, root: Path, cache: Cache) -> None:
        try:
            import cloudpickle
            from distributed import Client
        except ImportError as exc:
            raise DaskError(f"--executor dask: cannot import distributed ({exc}); "
                            "install it with: pip install 'pivot[dask]'") from None
        self.settings = settings
        self.root = root
        self.cache = cache
        self.download = settings.download
        self._pickle = cloudpickle
        self._storage: Storage | None = None
        self._register_project_modules()
        try:
            self.client = Client(settings.scheduler, timeout=settings.connect_timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise DaskError(f"cannot reach the Dask scheduler at {settings.scheduler} within "
                            f"{settings.connect_timeout:g}s ({type(exc).__name__}: {exc}); start it "
                            "('dask scheduler', see docs/dask.md) or fix --scheduler / executor.scheduler") from None
        workers = len(self.client.scheduler_info(n_workers=-1).get("workers", {}))
        # A worker process runs one stage at a time (a stage owns its cwd and fds 1-2). Half as
        # many again are submitted, so a worker that finishes finds its next stage waiting at the
        # scheduler instead of idling for a round trip through this machine.
        self.slots = max(1, workers + (workers + 1) // 2)
        self._on_remote: set[str] = set()  # objects known to be on the remote in this run
        self._manifests: dict[str, bytes] = {}
        self._sizes: dict[str, int] = {}
        self._sources: dict[str, str | None] = {}
        self._base_versions: dict[str, str] | None = None
        self._lock = threading.Lock()
        self._futures: dict[str, Any] = {}  # key -> dask future, while running
        self._answered: set[str] = set()
        self._post = ThreadPoolExecutor(4, thread_name_prefix="pivot-dask-finish")
        # Small outputs come back in the reply; this machine uploads them off the critical path.
        self._bg = ThreadPoolExecutor(2, thread_name_prefix="pivot-dask-upload")
        self._pending: dict[str, Future[None]] = {}
        self._upload_errors: list[str] = []
        self._closed = False

    @property
    def storage(self) -> Storage:
        """Opened when first needed: small deps and outputs travel inside the task and the reply,
        so a run of small stages may never need the remote from this machine (nor s3fs)."""
        with self._lock:
            if self._storage is None:
                from pivot.remote import open_storage

                self._storage = open_storage(self.settings.remote, self.root, TRANSFERS)
            return self._storage

    # -- code by value -------------------------------------------------------------------------
    def _register_project_modules(self) -> None:
        """Every loaded module whose file is in the project goes by value; anything else (the
        standard library, installed packages, pivot) by reference, to be imported on the worker."""
        base = str(self.root) + os.sep
        for name, mod in list(sys.modules.items()):
            filename = getattr(mod, "__file__", None) or ""
            if filename.startswith(base) and "site-packages" not in filename and "dist-packages" not in filename \
                    and name.split(".")[0] != "pivot":
                try:
                    self._pickle.register_pickle_by_value(mod)
                except ValueError:  # not importable by that name (a __main__ script)
                    continue

    def _code(self, task: StageTask) -> bytes:
        import importlib
        import io

        manifest = task.fingerprint.manifest if task.fingerprint else {}
        # A project module imported inside a function is not reached through globals: send it
        # whole (importing it here first if nothing has yet, as a local worker would).
        modules = {}
        imported = False
        for key in manifest:
            if key.startswith("module:"):
                name = key[7:]
                if name not in sys.modules:
                    try:
                        importlib.import_module(name)
                        imported = True
                    except Exception:
                        continue
                modules[name] = sys.modules[name]
        if imported:
            self._register_project_modules()

        buf = io.BytesIO()
        _pickler_class()(buf, protocol=self._pickle.DEFAULT_PROTOCOL).dump((task.func, task.params, modules))
        return buf.getvalue()

    def _versions(self, task: StageTask) -> tuple[tuple[str, str], ...]:
        if self._base_versions is None:
            from importlib import metadata

            self._base_versions = {"python": f"{sys.version_info.major}.{sys.version_info.minor}"}
            for dist in ("pivot", "cloudpickle", "pydantic"):
                try:
                    self._base_versions[dist] = metadata.version(dist)
                except metadata.PackageNotFoundError:
                    pass
        found = {k: v for k, v in self._base_versions.items() if k != "pydantic" or task.params is not None}
        for key, version in (task.fingerprint.manifest if task.fingerprint else {}).items():
            if key.startswith("pkg:") and version != "unknown":
                found[key[4:]] = version
        return tuple(sorted(found.items()))

    def _source_texts(self, task: StageTask) -> tuple[tuple[str, str], ...]:
        files = {str(self.root / v.partition(" ")[2]) for v in (task.fingerprint.manifest if task.fingerprint else {})
                 .values() if " " in v}
        code = getattr(task.func, "__code__", None)
        if code is not None:
            files.add(code.co_filename)
        out = []
        for f in sorted(files):
            if f not in self._sources:
                try:
                    self._sources[f] = Path(f).read_text(errors="replace") if os.path.getsize(f) < 2 ** 20 else None
                except OSError:
                    self._sources[f] = None
            text = self._sources[f]
            if text is not None:
                out.append((f, text))
        return tuple(out)

    # -- submit ----------------------------------------------------------------------------------
    def submit(self, task: StageTask) -> Future[StageResult]:
        fut: Future[StageResult] = Future()
        fut.set_running_or_notify_cancel()
        try:
            code = self._code(task)
        except Exception as exc:  # an unpicklable global, say: this stage fails, the run goes on
            fut.set_result(_failed(task.name, f"stage '{task.name}': its code could not be sent to the cluster "
                                              f"({type(exc).__name__}: {exc}); keep unpicklable objects (open "
                                              "files, locks, clients) out of module-level values the stage uses"))
            return fut
        sizes, blobs = self._send_inputs(task)
        key = f"pivot-{task.name}-{uuid.uuid4().hex}"
        wt = WorkerTask(
            key=key, name=task.name, code=code, code_digest=hash_bytes(code),
            fingerprint=task.fingerprint.digest if task.fingerprint else "",
            versions=self._versions(task), outs=task.outs, deps=task.deps, inputs=task.inputs,
            manifests=task.manifests, sizes=tuple(sorted(sizes.items())), remote=self.settings.remote,
            sources=self._source_texts(task), blobs=tuple(blobs.items()), download=self.download,
        )
        dfut = self.client.submit(run_on_worker, wt, key=key, pure=False, retries=0)
        with self._lock:
            self._futures[key] = dfut
        dfut.add_done_callback(lambda d: self._on_done(task, wt, d, fut))
        return fut

    def _on_done(self, task: StageTask, wt: WorkerTask, dfut: Any, fut: Future[StageResult]) -> None:
        """In Dask's callback thread: hand over to ours (downloads must not hold up other answers)."""
        try:
            self._post.submit(self._complete, task, wt, dfut, fut)
        except RuntimeError:  # shut down (Ctrl-C): nobody waits for this answer any more
            fut.cancel()

    def _send_inputs(self, task: StageTask) -> tuple[dict[str, int], dict[str, bytes]]:
        """Upload the deps (and IncrementalOuts' starting versions) the remote lacks, from the
        cache or else from the workspace. Returns the size of every object the worker needs, and
        the bytes of small ones, which travel inside the task instead (the worker checks them
        against their hash all the same): one remote round trip less per stage."""
        manifests = dict(task.manifests)
        sources: dict[str, str] = {}  # hash -> local file with those bytes
        sizes: dict[str, int] = {}
        tmp_files: list[str] = []

        def add(digest: str, path: Path) -> None:
            src = self.cache.path(digest) if self.cache.has(digest) else path
            sources.setdefault(digest, str(src))
            try:
                sizes.setdefault(digest, os.path.getsize(src))
            except OSError:  # not here (--no-download): on the remote, from this run
                if digest in self._sizes:
                    sizes.setdefault(digest, self._sizes[digest])

        try:
            for rec in (*task.deps, *task.inputs):
                if not rec.is_dir:
                    add(rec.hash, self.root / rec.path)
                    continue
                data = manifests.get(rec.hash) or self._manifests.get(rec.hash)
                if data is None and self.cache.has(rec.hash):
                    data = self.cache.path(rec.hash).read_bytes()
                if data is None:
                    continue  # produced on the cluster in this run: its objects are on the remote
                manifests[rec.hash] = data
                sizes[rec.hash] = len(data)
                for e in parse_manifest(data):
                    add(e.hash, self.root / rec.path / e.path)
                    sizes[e.hash] = e.size
                if not self.cache.has(rec.hash):
                    tmp_dir = self.cache.dir / "tmp"
                    tmp_dir.mkdir(parents=True, exist_ok=True)
                    fd, tmp = tempfile.mkstemp(prefix="manifest.", dir=tmp_dir)
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                    tmp_files.append(tmp)
                    sources[rec.hash] = tmp
            blobs = self._small(sources, sizes)
            with self._lock:
                waits = {self._pending[d] for d in sources if d not in blobs and d in self._pending}
            for f in waits:  # being uploaded in the background: let it finish rather than upload twice
                f.exception()
            with self._lock:
                wanted = {d: s for d, s in sources.items() if d not in self._on_remote and d not in blobs}
            if wanted:
                self._upload(wanted, f"uploading the deps of stage '{task.name}'")
                with self._lock:
                    self._on_remote.update(wanted)
        finally:
            for tmp in tmp_files:
                os.unlink(tmp)
        with self._lock:
            self._manifests.update(manifests)
        return sizes, blobs

    def _small(self, sources: dict[str, str], sizes: dict[str, int]) -> dict[str, bytes]:
        blobs: dict[str, bytes] = {}
        total = 0
        for d, src in sources.items():
            size = sizes.get(d, -1)
            if 0 <= size <= INLINE and total + size <= INLINE_TOTAL:
                try:
                    data = Path(src).read_bytes()
                except OSError:
                    continue
                if hash_bytes(data) == d:  # a workspace file changed since it was hashed: not sent
                    blobs[d] = data
                    total += size
        return blobs

    def _upload(self, sources: dict[str, str], doing: str, check: bool = True) -> None:
        """Put objects on the remote (only those it lacks, with `check`); directory manifests
        after their files, so a directory on the remote is complete once its manifest is there."""
        storage = self.storage

        async def go() -> None:
            present = await _present(storage, list(sources)) if check else set()
            todo = {d: sources[d] for d in sources if d not in present}
            await _put(storage, todo, set(self._manifests))

        _run(storage, doing, go)

    def _upload_later(self, sources: dict[str, str], name: str) -> None:
        def go() -> None:
            try:
                self._upload(sources, f"uploading the outputs of stage '{name}'", check=False)
            except PivotError as exc:
                with self._lock:
                    self._upload_errors.append(str(exc))
                raise
            with self._lock:
                self._on_remote.update(sources)

        fut = self._bg.submit(go)
        with self._lock:
            for d in sources:
                self._pending[d] = fut

    # -- completion (in a thread of self._post) ---------------------------------------------------
    def _complete(self, task: StageTask, wt: WorkerTask, dfut: Any, fut: Future[StageResult]) -> None:
        try:
            fut.set_result(self._answer(task, wt, dfut))
        except BaseException as exc:
            fut.set_exception(exc)
        finally:
            with self._lock:
                self._futures.pop(wt.key, None)

    def _answer(self, task: StageTask, wt: WorkerTask, dfut: Any) -> StageResult:
        from distributed import CancelledError

        with self._lock:
            if wt.key in self._answered:  # never twice: one answer per submission
                return _failed(task.name, "answered twice (ignored)")
            self._answered.add(wt.key)
        try:
            reply: WorkerReply = dfut.result()
        except CancelledError:
            return _failed(task.name, "cancelled")
        except Exception as exc:
            return _failed(task.name, _cluster_failure(task.name, exc))
        result = reply.result
        if result.refused:
            return result
        if result.ok and (reply.fingerprint != wt.fingerprint or reply.code_digest != wt.code_digest):
            return _failed(task.name, f"stage '{task.name}': the worker's answer is for other code "
                                      f"(fingerprint {reply.fingerprint or '?'}, sent {wt.fingerprint}); not recorded")
        if task.log_path is not None:
            atomic.write_text(task.log_path, result.output)
        if not result.ok:
            return result
        sizes = dict(reply.sizes)
        manifests = dict(reply.manifests)
        with self._lock:
            self._on_remote.update(reply.uploaded)
            self._sizes.update(sizes)
            self._manifests.update(manifests)
        try:
            inline = self._bring_back(task, result.records, sizes, manifests, dict(reply.blobs))
        except PivotError as exc:
            return _failed(task.name, f"stage '{task.name}' ran, but its outputs could not be brought back: {exc}")
        later = {d: str(self.cache.path(d)) for d in sizes if d not in reply.uploaded and self.cache.has(d)}
        if later:
            self._upload_later(later, task.name)
        return StageResult(
            result.name, True, result.duration, None, result.output, result.records, (), result.pid,
            placed=False, inline=tuple(inline.items()), timings=result.timings, worker=result.worker,
            manifests=tuple(manifests.items()),
        )

    def _bring_back(self, task: StageTask, records: Iterable[PathRecord], sizes: dict[str, int],
                    manifests: dict[str, bytes], blobs: dict[str, bytes]) -> dict[str, bytes]:
        """Cached outputs into the cache (unless --no-download); metrics as bytes, always: they
        belong in git. Every object is checked against its hash before it is used."""
        cached = {o.path: o.cached for o in task.outs}
        wanted: dict[str, int] = {}
        metrics: dict[str, str] = {}
        for rec in records:
            if not cached.get(rec.path, True) and not rec.is_dir:
                metrics[rec.path] = rec.hash
                continue
            if not self.download and cached.get(rec.path, True):
                continue
            wanted[rec.hash] = sizes.get(rec.hash, -1)
            if rec.is_dir:
                for e in parse_manifest(manifests[rec.hash]):
                    wanted[e.hash] = e.size
        for d in list(wanted):
            data = blobs.get(d)
            if data is not None and hash_bytes(data) == d:
                self.cache.add_bytes(data)
            if self.cache.has(d):
                del wanted[d]
        inline: dict[str, bytes] = {}
        need_read = {}
        for path, d in metrics.items():
            data = blobs.get(d)
            if data is not None and hash_bytes(data) == d:
                inline[path] = data
            else:
                need_read[path] = d
        if not wanted and not need_read:
            return inline
        storage, cache = self.storage, self.cache

        async def go() -> None:
            missing = await _fetch_into(storage, cache, wanted)
            for path, d in need_read.items():
                inline[path] = await _read_verified(storage, d)
            if missing:
                raise RemoteError(f"the remote lacks {len(missing)} object(s) the worker uploaded "
                                  f"(first: {missing[0]})")

        _run(storage, f"downloading the outputs of stage '{task.name}'", go)
        return inline

    def shutdown(self, kill: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            pending = list(self._futures.values())
        if pending:
            # A cancelled task's worker finishes the call it is in; its answer is dropped and
            # nothing it did reaches the workspace (it wrote only to its scratch folder).
            try:
                self.client.cancel(pending, force=True)
            except Exception:
                pass
        self._post.shutdown(wait=not kill, cancel_futures=kill)
        self._bg.shutdown(wait=not kill, cancel_futures=kill)
        try:
            self.client.close(timeout=2 if kill else 10)
        except Exception:
            pass
        if self._upload_errors and not kill:
            raise RemoteError(f"{self._upload_errors[0]}; the outputs are in the local cache and their locks are "
                              "written: run 'pivot push' to put them on the remote")


_PICKLER: type | None = None


def _pickler_class() -> type:
    """cloudpickle's Pickler, except that code keeps its file name (cloudpickle writes
    "<dynamic-code>"), so a traceback on a worker names the file and line as it does here."""
    global _PICKLER
    if _PICKLER is None:
        import types
        from collections import ChainMap

        import cloudpickle

        base = cloudpickle.Pickler
        reduce_code = base.dispatch_table[types.CodeType]

        def code_reduce(obj: types.CodeType) -> Any:
            fn, args = reduce_code(obj)
            return fn, tuple(obj.co_filename if isinstance(a, str) and a == "<dynamic-code>" else a for a in args)

        _PICKLER = type("CodePickler", (base,), {"dispatch_table": ChainMap({types.CodeType: code_reduce},
                                                                             base.dispatch_table)})
    return _PICKLER


def _failed(name: str, error: str) -> StageResult:
    return StageResult(name, False, 0.0, error, placed=False)


def _cluster_failure(name: str, exc: BaseException) -> str:
    kind = type(exc).__name__
    if kind == "KilledWorker":
        return (f"the workers running stage '{name}' died each time it was tried ({exc}); the stage may "
                "use more memory than a worker has, or crash the interpreter")
    if isinstance(exc, (ModuleNotFoundError, ImportError)):
        return (f"a worker could not load stage '{name}': {kind}: {exc}; install the same packages "
                "(and pivot) on the workers as here")
    return f"the cluster could not run stage '{name}': {kind}: {exc}"


# -- transfers over the remote's Storage primitives -----------------------------------------------------


def _run(storage: Storage, doing: str, coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    from pivot.remote import describe

    try:
        return storage.run(coro_fn)
    except PivotError:
        raise
    except Exception as exc:
        raise describe(storage, exc, doing) from None


async def _bounded(jobs: int, items: Iterable[Any], fn: Callable[[Any], Awaitable[Any]]) -> list[Any]:
    sem = asyncio.Semaphore(jobs)

    async def one(item: Any) -> Any:
        async with sem:
            return await fn(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


async def _present(storage: Storage, digests: list[str]) -> set[str]:
    from pivot.remote import missing

    return set(digests) - await missing(storage, digests, TRANSFERS)


async def _read_verified(storage: Storage, digest: str) -> bytes:
    from pivot.remote import NotFound

    try:
        data = await storage.read(object_relpath(digest))
    except NotFound:
        raise RemoteError(f"object {digest} is not on remote '{storage.name}'") from None
    if hash_bytes(data) != digest:
        raise RemoteError(f"object {digest} on remote '{storage.name}' does not match its hash; it was refused")
    return data


async def _fetch_into(storage: Storage, cache: Cache, wanted: dict[str, int]) -> list[str]:
    """Download objects into `cache`, each verified before it enters (as `pivot fetch` does);
    returns those not found. `wanted`: hash -> size, negative when not known."""
    from pivot.remote import Progress, Transfer, download

    lacking = {d: d for d in sorted(wanted) if not cache.has(d)}
    result = Transfer(storage.name)
    sizes = {d: n for d, n in wanted.items() if n >= 0}
    await download(storage, cache, lacking, TRANSFERS, Progress("", len(lacking), False), result, sizes)
    if result.corrupt:
        raise RemoteError(f"object {min(result.corrupt)} on remote '{storage.name}' does not match its hash; "
                          "it was refused")
    return sorted(result.missing)


# -- the worker side -----------------------------------------------------------------------------------

_ONE_AT_A_TIME = threading.Lock()  # a stage owns the process: its cwd and fds 1 and 2
_STORAGES: dict[str, Storage] = {}
_VERSIONS: dict[str, str] = {}
CACHE_LIMIT = int(os.environ.get("PIVOT_WORKER_CACHE_BYTES", 4 * 2 ** 30))
_CACHED = 0  # bytes this process put in its cache


def _worker_dir() -> Path:
    try:
        from distributed import get_worker

        worker = get_worker()
        base = Path(worker.local_directory) / "pivot"
    except (ImportError, ValueError):
        base = Path(tempfile.gettempdir()) / f"pivot-worker-{os.getpid()}"
    base.mkdir(parents=True, exist_ok=True)
    return base


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def _storage(spec: RemoteSpec) -> Storage:
    """One Storage per remote and worker process: its connections are reused across stages."""
    from pivot.remote import open_storage

    key = repr((spec.name, spec.url, sorted(spec.options.items())))
    storage = _STORAGES.get(key)
    if storage is None:
        storage = _STORAGES[key] = open_storage(spec, Path.cwd(), TRANSFERS)
    return storage


def _installed(dist: str) -> str:
    if dist not in _VERSIONS:
        if dist == "python":
            _VERSIONS[dist] = f"{sys.version_info.major}.{sys.version_info.minor}"
        else:
            from importlib import metadata

            try:
                _VERSIONS[dist] = metadata.version(dist)
            except (metadata.PackageNotFoundError, ValueError):
                _VERSIONS[dist] = "not installed"
    return _VERSIONS[dist]


def check_versions(name: str, versions: Iterable[tuple[str, str]], where: str) -> str | None:
    """Why this process may not run the stage, or None."""
    for dist, wanted in versions:
        have = _installed(dist)
        if have != wanted:
            what = "Python" if dist == "python" else f"package {dist}"
            fix = f"pip install '{dist}=={wanted}'" if dist != "python" else f"Python {wanted}"
            return (f"worker {where} refused stage '{name}': {what} is {wanted} here but {have} on the worker; "
                    f"install the same version on every worker ({fix}) so results can be trusted")
    return None


def run_on_worker(wt: WorkerTask) -> WorkerReply:
    """Runs on a Dask worker: fetch deps by hash, call the stage in a scratch folder, upload the
    outputs, answer with their hashes."""
    where = _worker_address()
    with _ONE_AT_A_TIME:
        refused = check_versions(wt.name, wt.versions, where)
        if refused:
            return WorkerReply(StageResult(wt.name, False, 0.0, refused, refused=refused, worker=where))
        base = _worker_dir()
        scratch = Path(tempfile.mkdtemp(prefix=f"{wt.name[:40]}.", dir=base))
        try:
            return _run_in(wt, base, scratch, where)
        except PivotError as exc:  # the remote failed us: the stage fails with the remote's message
            return WorkerReply(StageResult(wt.name, False, 0.0, f"on worker {where}: {exc}", worker=where))
        finally:
            os.chdir(base)
            shutil.rmtree(scratch, ignore_errors=True)


def _run_in(wt: WorkerTask, base: Path, scratch: Path, where: str) -> WorkerReply:
    import pickle

    from pivot.executor import call_stage

    start = time.perf_counter()
    storage = _storage(wt.remote)
    cache = Cache(base / "cache", "auto")
    work = scratch / "work"
    work.mkdir()
    problem = _materialise(storage, cache, work, wt)
    fetched = time.perf_counter()
    if problem:
        return _reply(wt, StageResult(wt.name, False, fetched - start, problem, worker=where))
    func, params, modules = pickle.loads(wt.code)
    _install_sources(wt.sources)
    for o in wt.outs:
        (work / o.path).parent.mkdir(parents=True, exist_ok=True)
    task = StageTask(wt.name, func, params, work, wt.outs, log_path=scratch / "stage.log")
    saved = {m: sys.modules.get(m) for m in modules}
    sys.modules.update(modules)
    try:
        error, output = call_stage(task)
    finally:
        for m, old in saved.items():
            if old is None:
                sys.modules.pop(m, None)
            else:
                sys.modules[m] = old
    ran = time.perf_counter()
    if error is not None:
        return _reply(wt, StageResult(wt.name, False, ran - start, error, output, pid=os.getpid(), worker=where,
                                      timings=(("fetch", fetched - start), ("run", ran - fetched))))
    records, objects, manifests, per_out = _hash_outputs(work, wt.outs)
    blobs, by_client = _inline(wt, objects, per_out)
    mine = {d: src for d, (src, _size) in objects.items() if d not in by_client}

    async def upload() -> None:
        present = await _present(storage, [d for d in mine if objects[d][1] > INLINE])
        await _put(storage, {d: src for d, src in mine.items() if d not in present}, set(manifests))

    _run(storage, f"uploading the outputs of stage '{wt.name}'", upload)
    done = time.perf_counter()
    for d, (src, _size) in objects.items():  # a stage after this one on this worker needs no download
        _keep(cache, d, src=src)
    timings = (("fetch", fetched - start), ("run", ran - fetched), ("upload", done - ran))
    result = StageResult(wt.name, True, done - start, None, output, tuple(records), pid=os.getpid(),
                         placed=False, timings=timings, worker=where)
    return WorkerReply(result, wt.fingerprint, wt.code_digest,
                       tuple((d, size) for d, (_src, size) in objects.items()),
                       tuple(manifests.items()), tuple(blobs.items()), tuple(mine))


def _inline(wt: WorkerTask, objects: dict[str, tuple[str, int]], per_out: list[tuple[OutSpec, list[str]]]
            ) -> tuple[dict[str, bytes], set[str]]:
    """Small outputs travel back in the reply, whole (all of a directory's objects or none).
    Returns their bytes, and the objects the client will upload itself: those of cached outputs
    when it downloads (it has them then); a worker always uploads metrics, and everything with
    --no-download, before answering."""
    blobs: dict[str, bytes] = {}
    by_client: set[str] = set()
    by_worker: set[str] = set()
    total = 0
    for o, digests in per_out:
        size = sum(objects[d][1] for d in set(digests) if d not in blobs)
        small = all(objects[d][1] <= INLINE for d in digests) and total + size <= INLINE_TOTAL
        if small:
            for d in digests:
                if d not in blobs:
                    blobs[d] = Path(objects[d][0]).read_bytes()
            total += size
        (by_client if small and wt.download and o.cached else by_worker).update(digests)
    return blobs, by_client - by_worker


async def _put(storage: Storage, sources: dict[str, str], manifests: set[str]) -> None:
    """Upload files, then directory manifests: a directory on the remote is complete once its
    manifest is there."""
    for batch in ([d for d in sources if d not in manifests], [d for d in sources if d in manifests]):
        await _bounded(TRANSFERS, batch, lambda d: storage.put(sources[d], object_relpath(d), d))


def _keep(cache: Cache, digest: str, data: bytes | None = None, src: str | None = None) -> None:
    """Put an object in the worker's cache: bytes, or a scratch file moved in (no copy). The
    cache is a convenience: above CACHE_LIMIT bytes it is emptied and refills from the remote."""
    global _CACHED
    if cache.has(digest):
        return
    if _CACHED > CACHE_LIMIT:
        shutil.rmtree(cache.dir / "files", ignore_errors=True)
        _CACHED = 0
    if data is not None:
        cache.add_bytes(data)
        _CACHED += len(data)
        return
    assert src is not None
    try:
        cache.commit_file(src, digest)
    except OSError:
        return
    _CACHED += os.path.getsize(cache.path(digest))


def _reply(wt: WorkerTask, result: StageResult) -> WorkerReply:
    return WorkerReply(result, wt.fingerprint, wt.code_digest)


def _install_sources(sources: Iterable[tuple[str, str]]) -> None:
    """The client's source text, so a traceback on the worker shows the lines it does locally."""
    import linecache

    for filename, text in sources:
        linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)


def _materialise(storage: Storage, cache: Cache, work: Path, wt: WorkerTask) -> str | None:
    """Fetch deps and IncrementalOuts' starting versions into the worker's cache by hash, then put
    copies of them in the scratch folder. Returns what went wrong, or None."""
    sizes = dict(wt.sizes)
    manifests = dict(wt.manifests)
    for d, data in wt.blobs:
        if hash_bytes(data) == d:
            _keep(cache, d, data=data)
    wanted: dict[str, int] = {}
    dirs: list[PathRecord] = []
    for rec in (*wt.deps, *wt.inputs):
        if rec.is_dir:
            dirs.append(rec)
            if rec.hash not in manifests and not cache.has(rec.hash):
                wanted[rec.hash] = sizes.get(rec.hash, -1)
        else:
            wanted[rec.hash] = sizes.get(rec.hash, -1)

    async def go() -> list[str]:
        missing = await _fetch_into(storage, cache, wanted)
        more: dict[str, int] = {}
        for rec in dirs:
            if rec.hash in missing:
                continue
            if rec.hash not in manifests:
                manifests[rec.hash] = cache.path(rec.hash).read_bytes()
            for e in parse_manifest(manifests[rec.hash]):
                more[e.hash] = e.size
        return missing + await _fetch_into(storage, cache, more)

    missing = _run(storage, f"fetching the deps of stage '{wt.name}'", go)
    if missing:
        paths = [r.path for r in (*wt.deps, *wt.inputs) if r.hash in missing] or missing
        return (f"stage '{wt.name}': dep '{paths[0]}' ({missing[0]}) is not on remote '{storage.name}' "
                "(removed meanwhile, by 'pivot gc --remote' say?); run again")
    for rec in (*wt.deps, *wt.inputs):
        dest = work / rec.path
        if rec.is_dir:
            if rec.hash in manifests and not cache.has(rec.hash):
                cache.add_bytes(manifests[rec.hash])
            cache.checkout_dir(rec.hash, dest)
        else:
            cache.checkout_file(rec.hash, dest)
    return None


def _hash_outputs(work: Path, outs: Iterable[OutSpec]) -> tuple[
        list[PathRecord], dict[str, tuple[str, int]], dict[str, bytes], list[tuple[OutSpec, list[str]]]]:
    """Each output's lock record; every object to upload (hash -> (file, size)); directory
    manifests; each output's objects."""
    from pivot.hashing import walk_files

    records: list[PathRecord] = []
    objects: dict[str, tuple[str, int]] = {}
    manifests: dict[str, bytes] = {}
    per_out: list[tuple[OutSpec, list[str]]] = []
    for o in outs:
        full = work / o.path
        if full.is_dir():
            entries = []
            for rel, st in walk_files(str(full)):
                digest = hash_file(full / rel)
                entries.append(DirEntry(rel, digest, st.st_size))
                objects.setdefault(digest, (str(full / rel), st.st_size))
            data = manifest_bytes(entries)
            digest = hash_bytes(data)
            manifest_file = work.parent / f"manifest.{digest}"
            manifest_file.write_bytes(data)
            objects[digest] = (str(manifest_file), len(data))
            manifests[digest] = data
            records.append(PathRecord(o.path, digest, True, o.kind))
            per_out.append((o, [e.hash for e in entries] + [digest]))
        else:
            digest = hash_file(full)
            objects.setdefault(digest, (str(full), os.path.getsize(full)))
            records.append(PathRecord(o.path, digest, False, o.kind))
            per_out.append((o, [digest]))
    return records, objects, manifests, per_out

