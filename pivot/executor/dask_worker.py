"""The worker half of the Dask executor: runs on a Dask worker (any machine of the cluster),
with the remote as the only thing it shares with the client. See dask_client.py for the whole
exchange. Nothing here imports dask or distributed at module level."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pivot.cache import Cache
from pivot.errors import PivotError
from pivot.executor.base import OutSpec, StageResult, StageTask
from pivot.executor.dask_transfer import INLINE, INLINE_TOTAL, TRANSFERS, fetch_into, present, put_objects, run_storage
from pivot.hashing import hash_bytes, hash_file, manifest_bytes, parse_manifest
from pivot.records import DirEntry, PathRecord

if TYPE_CHECKING:
    from pivot.remote import Storage
    from pivot.remote_config import RemoteSpec

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


def run_chain(first: WorkerTask, followers: tuple[WorkerTask, ...]
              ) -> tuple[WorkerReply, list[tuple[tuple[PathRecord, ...], WorkerReply]]]:
    """Runs on a Dask worker: `first`, then each follower with the outputs of the stage before
    it (their objects are in this worker's cache already), until one fails (dask_chain.py).
    Returns the first stage's reply, and each follower's deps as it ran with its reply."""
    first_reply = reply = run_on_worker(first)
    done: list[tuple[tuple[PathRecord, ...], WorkerReply]] = []
    for wt in followers:
        if not reply.result.ok:
            break
        made = {r.path: r for r in reply.result.records}
        deps = tuple(PathRecord(r.path, made[r.path].hash, made[r.path].is_dir) if not r.hash and r.path in made
                     else r for r in wt.deps)
        if any(not r.hash for r in deps):
            break
        reply = run_on_worker(replace(wt, deps=deps))
        done.append((deps, reply))
    return first_reply, done


def _run_in(wt: WorkerTask, base: Path, scratch: Path, where: str) -> WorkerReply:
    import pickle

    from pivot.executor.local import call_stage  # lazy: start-up of the worker module

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
        on_remote = await present(storage, [d for d in mine if objects[d][1] > INLINE])
        await put_objects(storage, {d: src for d, src in mine.items() if d not in on_remote}, set(manifests))

    if mine:  # (small outputs the client uploads itself: no trip to the remote from here)
        run_storage(storage, f"uploading the outputs of stage '{wt.name}'", upload)
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
    _keep_blobs(cache, wt.blobs)
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
        missing = await fetch_into(storage, cache, wanted)
        more: dict[str, int] = {}
        for rec in dirs:
            if rec.hash in missing:
                continue
            if rec.hash not in manifests:
                manifests[rec.hash] = cache.path(rec.hash).read_bytes()
            for e in parse_manifest(manifests[rec.hash]):
                more[e.hash] = e.size
        return missing + await fetch_into(storage, cache, more)

    if _at_hand(cache, wanted, dirs, manifests):
        missing: list[str] = []  # sent along, or cached here: no trip to the remote
    else:
        missing = run_storage(storage, f"fetching the deps of stage '{wt.name}'", go)
    if missing:
        paths = [r.path for r in (*wt.deps, *wt.inputs) if r.hash in missing] or missing
        return (f"stage '{wt.name}': dep '{paths[0]}' ({missing[0]}) is not on remote '{storage.name}' "
                "(removed meanwhile, by 'pivot gc --remote' say?); run again")
    _place_inputs(cache, work, (*wt.deps, *wt.inputs), manifests)
    return None


def _keep_blobs(cache: Cache, blobs: Iterable[tuple[str, bytes]]) -> None:
    for d, data in blobs:
        if hash_bytes(data) == d:
            _keep(cache, d, data=data)


def _at_hand(cache: Cache, wanted: Iterable[str], dirs: list[PathRecord], manifests: dict[str, bytes]) -> bool:
    """Every object of the deps is in the worker's cache already."""
    return all(cache.has(d) for d in wanted) and all(r.hash in manifests for r in dirs) and all(
        cache.has(e.hash) for r in dirs for e in parse_manifest(manifests[r.hash]))


def _place_inputs(cache: Cache, work: Path, records: Iterable[PathRecord], manifests: dict[str, bytes]) -> None:
    """Copies of the deps and starting versions, from the worker's cache into the scratch folder."""
    for rec in records:
        dest = work / rec.path
        if rec.is_dir:
            if rec.hash in manifests and not cache.has(rec.hash):
                cache.add_bytes(manifests[rec.hash])
            cache.checkout_dir(rec.hash, dest)
        else:
            cache.checkout_file(rec.hash, dest)


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
