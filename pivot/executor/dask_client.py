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

This module is the client half; dask_worker.py is the half that runs on the workers (and
imports neither this module nor dask or distributed at module level), dask_transfer.py moves
objects over the remote for both. `pivot run` with the local pool never imports any of them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import uuid
from collections.abc import Iterable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pivot import atomic
from pivot.cache import Cache
from pivot.errors import DaskError, PivotError, RemoteError
from pivot.executor.base import Capabilities, StageResult, StageTask
from pivot.executor.dask_chain import Answered, Speculated
from pivot.executor.dask_code import CodeSender
from pivot.executor.dask_settings import DaskSettings
from pivot.executor.dask_transfer import (
    INLINE,
    INLINE_TOTAL,
    TRANSFERS,
    fetch_into,
    present,
    put_objects,
    read_verified,
    run_storage,
)
from pivot.executor.dask_worker import WorkerReply, WorkerTask, run_chain, run_on_worker
from pivot.hashing import hash_bytes, parse_manifest
from pivot.limits import cluster_resources
from pivot.records import PathRecord

if TYPE_CHECKING:
    from pivot.remote import Storage

# -- the client side ---------------------------------------------------------------------------------


class DaskExecutor:
    """Submits stages to a Dask scheduler; the remote carries deps and outputs both ways."""

    capabilities: Capabilities  # known once connected: slots come from the cluster's size

    def __init__(self, settings: DaskSettings, root: Path, cache: Cache) -> None:
        try:
            import cloudpickle  # lazy: only a Dask run needs it
            from distributed import Client  # lazy: start-up (distributed is heavy)
        except ImportError as exc:
            raise DaskError(f"--executor dask: cannot import distributed ({exc}); "
                            "install it with: pip install 'pivot[dask]'") from None
        self.settings = settings
        self.root = root
        self.cache = cache
        self.download = settings.download
        self._code_sender = CodeSender(root, cloudpickle)
        self._storage: Storage | None = None
        # Workers use their own environment's credentials: none of this machine's go in a task.
        self._worker_remote = settings.remote.without_secrets()
        self.cluster: Any = None  # a cluster started from executor.cluster, closed by shutdown
        self.client: Any = self._connect(Client)
        found = self.client.scheduler_info(n_workers=-1).get("workers", {})
        # A worker process runs one stage at a time (a stage owns its cwd and fds 1-2). Half as
        # many again are submitted, so a worker that finishes finds its next stage waiting at the
        # scheduler instead of idling for a round trip through this machine. A cluster started
        # from configuration counts the most workers it may have: an adaptive one starts with few
        # or none, and scales to the stages waiting at the scheduler.
        workers = settings.cluster.most_workers() if settings.cluster is not None else None
        if workers is None:
            workers = len(found)
        self.capabilities = Capabilities(remote=True, slots=max(1, workers + (workers + 1) // 2),
                                         downloads=settings.download, workers=_resources(found), batches=True)
        self._on_remote: set[str] = set()  # objects known to be on the remote in this run
        self._manifests: dict[str, bytes] = {}
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._futures: dict[str, Any] = {}  # key -> dask future, while running
        self._answered: set[str] = set()
        self._post = ThreadPoolExecutor(4, thread_name_prefix="pivot-dask-finish")
        # Small outputs come back in the reply; this machine uploads them off the critical path.
        self._bg = ThreadPoolExecutor(2, thread_name_prefix="pivot-dask-upload")
        self._pending: dict[str, Future[None]] = {}
        self._upload_errors: list[str] = []
        self._speculated = Speculated()  # answers of stages run after another, until submitted
        self._closed = False
        self._lost: set[str] = set()  # keys of tasks a worker was running when it was lost
        self._expired: set[str] = set()  # keys of tasks that timed out (answered by _expire)
        self.client.subscribe_topic("all", self._on_event)  # lost workers: see _on_event

    def _connect(self, client_class: Any) -> Any:
        """A Client of the scheduler at settings.scheduler, or of a cluster started now from
        settings.cluster (closed again if connecting to it fails)."""
        settings = self.settings
        if settings.cluster is not None:
            from pivot.executor.dask_cluster import close_cluster, start_cluster  # lazy: imports the deployer

            self.cluster = start_cluster(settings.cluster)
            try:
                return client_class(self.cluster, timeout=settings.connect_timeout, set_as_default=False)
            except BaseException as exc:
                close_cluster(self.cluster, 10)
                if not isinstance(exc, (OSError, TimeoutError, ValueError)):
                    raise
                raise DaskError(f"cannot connect to the cluster {settings.cluster.class_path} started from "
                                f"{settings.cluster.where} ({type(exc).__name__}: {exc})") from None
        try:
            return client_class(settings.scheduler, timeout=settings.connect_timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise DaskError(f"cannot reach the Dask scheduler at {settings.scheduler} within "
                            f"{settings.connect_timeout:g}s ({type(exc).__name__}: {exc}); start it "
                            "('dask scheduler', see docs/dask.md) or fix --scheduler / executor.scheduler") from None

    @property
    def storage(self) -> Storage:
        """Opened when first needed: small deps and outputs travel inside the task and the reply,
        so a run of small stages may never need the remote from this machine (nor s3fs)."""
        with self._lock:
            if self._storage is None:
                from pivot.remote import open_storage  # lazy: start-up

                self._storage = open_storage(self.settings.remote, self.root, TRANSFERS)
            return self._storage

    # -- submit ----------------------------------------------------------------------------------
    def submit(self, task: StageTask) -> Future[StageResult]:
        fut: Future[StageResult] = Future()
        fut.set_running_or_notify_cancel()
        try:
            code = self._code_sender.code(task)
        except Exception as exc:  # an unpicklable global, say: this stage fails, the run goes on
            fut.set_result(_failed(task.name, f"stage '{task.name}': its code could not be sent to the cluster "
                                              f"({type(exc).__name__}: {exc}); keep unpicklable objects (open "
                                              "files, locks, clients) out of module-level values the stage uses"))
            return fut
        wt = self._worker_task(task, code)
        reply = self._speculated.claim(wt)
        if reply is not None:  # it ran on a worker after the stage before it, with these very inputs
            if reply.uploaded:  # outputs to download: not on the runner's thread
                self._post.submit(self._complete, task, wt, Answered(reply), fut)
            else:  # everything is in the reply: settled here, without two thread hand-overs
                self._complete(task, wt, Answered(reply), fut)
            return fut
        chain = self._chain(task)
        fn, args = (run_chain, (wt, chain)) if chain else (run_on_worker, (wt,))
        # Worker resources: only a worker that offers what the stage declares runs it.
        dfut = self.client.submit(fn, *args, key=wt.key, pure=False, retries=0,
                                  resources=cluster_resources(task.limits) or None)
        with self._lock:
            self._futures[wt.key] = dfut
        dfut.add_done_callback(lambda d: self._on_done(task, wt, d, fut, chain))
        if task.limits.timeout is not None:
            timer = threading.Timer(task.limits.timeout, self._expire, (task, wt.key, fut))
            timer.daemon = True
            timer.start()
            fut.add_done_callback(lambda _f: timer.cancel())
        return fut

    def _worker_task(self, task: StageTask, code: bytes) -> WorkerTask:
        sizes, blobs = self._send_inputs(task)
        key = f"pivot-{task.name}-{uuid.uuid4().hex}"
        return WorkerTask(
            key=key, name=task.name, code=code, code_digest=hash_bytes(code),
            fingerprint=task.fingerprint.digest if task.fingerprint else "",
            versions=self._code_sender.versions(task), outs=task.outs, deps=task.deps, inputs=task.inputs,
            manifests=task.manifests, sizes=tuple(sorted(sizes.items())), remote=self._worker_remote,
            sources=self._code_sender.sources(task), blobs=tuple(blobs.items()), download=self.download,
        )

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        """A scheduler event: a worker lost (not closed on purpose) while it ran some stages,
        which the scheduler runs again on other workers; their results say so."""
        msg = event[1]
        if isinstance(msg, dict) and msg.get("action") == "remove-worker" and not msg.get("expected"):
            with self._lock:
                self._lost.update(str(k) for k in msg.get("processing-tasks", ()))

    def _expire(self, task: StageTask, key: str, fut: Future[StageResult]) -> None:
        """A stage's time is up: its task is cancelled and the worker running it restarted (a
        running Python call cannot be interrupted otherwise; the worker's nanny starts it again)."""
        with self._lock:
            dfut = self._futures.pop(key, None)
            if dfut is None or key in self._answered:
                return
            self._answered.add(key)
            self._expired.add(key)
        with contextlib.suppress(Exception):  # the cluster may be gone already
            running_on = [w for w, keys in self.client.processing().items() if key in keys]
            self.client.cancel([dfut], force=True)
            if running_on:  # before answering: the run may end, and close the client, right after
                self.client.restart_workers(running_on, timeout=30, raise_for_error=False)
        seconds = task.limits.timeout or 0.0
        with contextlib.suppress(InvalidStateError):  # the run was stopped meanwhile (Ctrl-C)
            fut.set_result(_failed(task.name, f"stage '{task.name}' timed out after {seconds:g}s: its task was "
                                              "cancelled and the worker running it restarted; raise its timeout= "
                                              "or make it faster", timed_out=True))

    def _chain(self, task: StageTask) -> tuple[WorkerTask, ...]:
        """The WorkerTasks of the stages to run after `task` on the same worker (pivot/speculate.py),
        up to the first whose code cannot be sent."""
        chain = []
        for follower in task.then:
            try:
                chain.append(self._worker_task(follower, self._code_sender.code(follower)))
            except Exception:  # it goes on its own when its turn comes, and fails there with the reason
                break
        return tuple(chain)

    def _on_done(self, task: StageTask, wt: WorkerTask, dfut: Any, fut: Future[StageResult],
                 chain: tuple[WorkerTask, ...] = ()) -> None:
        """In Dask's callback thread: hand over to ours (downloads must not hold up other answers)."""
        if chain:
            dfut = self._speculated.unpack(dfut, chain)
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
                if not rec.hash:  # a chain's follower: made by the stage before it, on the worker
                    continue
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
                    tmp_files.append(self._manifest_file(data))
                    sources[rec.hash] = tmp_files[-1]
            blobs = self._small(sources, sizes)
            self._send_lacking(sources, blobs, task.name)
        finally:
            for tmp in tmp_files:
                os.unlink(tmp)
        with self._lock:
            self._manifests.update(manifests)
        return sizes, blobs

    def _manifest_file(self, data: bytes) -> str:
        """A temporary file in the cache's tmp folder holding `data`, to upload from."""
        tmp_dir = self.cache.dir / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="manifest.", dir=tmp_dir)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return tmp

    def _send_lacking(self, sources: dict[str, str], blobs: dict[str, bytes], name: str) -> None:
        """Upload those of `sources` (hash -> local file) the remote lacks and the task does not carry."""
        with self._lock:
            waits = {self._pending[d] for d in sources if d not in blobs and d in self._pending}
        for pending in waits:  # being uploaded in the background: let it finish rather than upload twice
            pending.exception()
        with self._lock:
            wanted = {d: s for d, s in sources.items() if d not in self._on_remote and d not in blobs}
        if wanted:
            self._upload(wanted, f"uploading the deps of stage '{name}'")
            with self._lock:
                self._on_remote.update(wanted)

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
            on_remote = await present(storage, list(sources)) if check else set()
            todo = {d: sources[d] for d in sources if d not in on_remote}
            await put_objects(storage, todo, set(self._manifests))

        run_storage(storage, doing, go)

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
        with self._lock:
            if wt.key in self._expired:  # timed out: _expire answers
                return
        try:
            fut.set_result(self._answer(task, wt, dfut))
        except BaseException as exc:
            fut.set_exception(exc)
        finally:
            with self._lock:
                self._futures.pop(wt.key, None)

    def _answer(self, task: StageTask, wt: WorkerTask, dfut: Any) -> StageResult:
        from distributed import CancelledError  # lazy: imported already by the client

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
        with self._lock:
            rescheduled = wt.key in self._lost
        return StageResult(
            result.name, True, result.duration, None, result.output, result.records, (), result.pid,
            placed=False, inline=tuple(inline.items()), timings=result.timings, worker=result.worker,
            manifests=tuple(manifests.items()), rescheduled=rescheduled,
        )

    def _wanted(self, task: StageTask, records: Iterable[PathRecord], sizes: dict[str, int],
                manifests: dict[str, bytes]) -> tuple[dict[str, int], dict[str, str]]:
        """The objects to bring into the cache (hash -> size, negative when not known), and the
        metrics to read (path -> hash)."""
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
        return wanted, metrics

    def _bring_back(self, task: StageTask, records: Iterable[PathRecord], sizes: dict[str, int],
                    manifests: dict[str, bytes], blobs: dict[str, bytes]) -> dict[str, bytes]:
        """Cached outputs into the cache (unless --no-download); metrics as bytes, always: they
        belong in git. Every object is checked against its hash before it is used."""
        wanted, metrics = self._wanted(task, records, sizes, manifests)
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
            missing = await fetch_into(storage, cache, wanted)
            for path, d in need_read.items():
                inline[path] = await read_verified(storage, d)
            if missing:
                raise RemoteError(f"the remote lacks {len(missing)} object(s) the worker uploaded "
                                  f"(first: {missing[0]})")

        run_storage(storage, f"downloading the outputs of stage '{task.name}'", go)
        return inline

    def shutdown(self, kill: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self._speculated.clear()
        with self._lock:
            pending = list(self._futures.values())
        if pending:
            # A cancelled task's worker finishes the call it is in; its answer is dropped and
            # nothing it did reaches the workspace (it wrote only to its scratch folder).
            with contextlib.suppress(Exception):  # the cluster may be gone already
                self.client.cancel(pending, force=True)
        try:
            self._post.shutdown(wait=not kill, cancel_futures=kill)
            self._bg.shutdown(wait=not kill, cancel_futures=kill)
            with contextlib.suppress(Exception):  # the cluster may be gone already
                # Unsubscribed first: else the scheduler logs a traceback sending this client's
                # own departure to it, once it is closed.
                self.client.unsubscribe_topic("all")
                self.client.close(timeout=2 if kill else 10)
        finally:  # even on a second Ctrl-C: a cluster Pivot started does not outlive the run
            if self.cluster is not None:
                from pivot.executor.dask_cluster import close_cluster  # lazy: loaded when it was started

                close_cluster(self.cluster, 5 if kill else 30)
        if self._upload_errors and not kill:
            raise RemoteError(f"{self._upload_errors[0]}; the outputs are in the local cache and their locks are "
                              "written: run 'pivot push' to put them on the remote")


def _failed(name: str, error: str, timed_out: bool = False) -> StageResult:
    return StageResult(name, False, 0.0, error, placed=False, timed_out=timed_out)


def _resources(workers: dict[str, Any]) -> tuple[tuple[tuple[str, float], ...], ...]:
    """Each worker's resources (`dask worker --resources`), as scheduler_info gives them."""
    return tuple(tuple(sorted((str(k), float(v)) for k, v in (w.get("resources") or {}).items()))
                 for w in workers.values())


def _cluster_failure(name: str, exc: BaseException) -> str:
    kind = type(exc).__name__
    if kind == "KilledWorker":
        return (f"the workers running stage '{name}' died each time it was tried ({exc}); the stage may "
                "use more memory than a worker has, or crash the interpreter")
    if isinstance(exc, (ModuleNotFoundError, ImportError)):
        return (f"a worker could not load stage '{name}': {kind}: {exc}; install the same packages "
                "(and pivot) on the workers as here")
    return f"the cluster could not run stage '{name}': {kind}: {exc}"
