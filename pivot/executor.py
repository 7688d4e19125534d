"""Executors run stages. The runner talks to them through a small interface — submit a task,
get a future of its result — so a local process pool, an in-process runner or a distributed
engine are interchangeable.

A task carries everything a worker needs: the stage function (pickled by reference, so the
worker imports the pipeline module once and keeps it warm), its params, and where its outputs
go. The worker runs the function with stdout/stderr captured, checks the declared outputs
exist, and stores them in the cache (hashing happens in parallel this way). The parent
computes fingerprints, decides, and writes lock files.

An executor whose workers share nothing with this machine (`remote = True`, see
pivot/dask_executor.py) also gets the deps' hashes and the code fingerprint in the task, and
returns results whose outputs are not in the workspace yet (`StageResult.placed` False): the
runner then brings them in from the cache and writes metrics from `StageResult.inline`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pivot.records import FileMemoRow, PathRecord

if TYPE_CHECKING:
    from pivot.fingerprint import Fingerprint


@dataclass(frozen=True)
class OutSpec:
    path: str
    kind: str
    cached: bool


@dataclass(frozen=True)
class StageTask:
    name: str
    func: Callable[..., Any]
    params: Any  # the params instance, or None
    root: Path
    outs: tuple[OutSpec, ...] = ()
    cache_dir: Path | None = None
    link: str = "auto"
    log_path: Path | None = None
    # For remote executors only (the local pool reads the workspace itself):
    fingerprint: Fingerprint | None = None
    deps: tuple[PathRecord, ...] = ()  # each dep's hash, as the lock will record it
    manifests: tuple[tuple[str, bytes], ...] = ()  # hash -> manifest bytes of directory deps
    inputs: tuple[PathRecord, ...] = ()  # IncrementalOuts to start from (workspace or cache)


@dataclass(frozen=True)
class StageResult:
    name: str
    ok: bool
    duration: float
    error: str | None = None  # the user's traceback, or why the stage is refused
    output: str = ""  # captured stdout, stderr and logging
    records: tuple[PathRecord, ...] = ()
    memo: tuple[FileMemoRow, ...] = field(default=())
    pid: int = 0
    # Remote executors: outputs are in the cache (or left on the remote), not in the workspace.
    placed: bool = True
    inline: tuple[tuple[str, bytes], ...] = ()  # path -> bytes of outputs that are not cached (metrics)
    manifests: tuple[tuple[str, bytes], ...] = ()  # hash -> manifest of directory outputs
    refused: str | None = None  # the worker cannot be trusted with this stage: stop the run
    timings: tuple[tuple[str, float], ...] = ()  # (step, seconds): where a remote stage spent its time
    worker: str = ""


class Executor(Protocol):
    """`remote`: workers do not see this machine's files (see module docstring)."""

    remote: bool

    def submit(self, task: StageTask) -> Future[StageResult]: ...

    def shutdown(self, kill: bool = False) -> None: ...


def format_user_traceback(exc: BaseException) -> str:
    """The traceback from the stage function down, without Pivot's own frames."""
    tb = exc.__traceback__
    here = os.path.abspath(__file__)
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) == here:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()


@contextmanager
def _captured(log_path: Path | None) -> Iterator[None]:
    """Send fds 1 and 2 (so print, logging and child processes alike) to the log file."""
    if log_path is None:
        yield
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    root = logging.getLogger()
    handler = None
    if not root.handlers:  # make logging.info() visible in the stage log, as a user expects
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        saved_level = root.level
        root.setLevel(logging.INFO)
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    buffered = getattr(sys.stdout, "line_buffering", True) is False
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        if reconfigure and buffered:  # keep print() in order with stderr, logging and children
            reconfigure(line_buffering=True)
        yield
    finally:
        if reconfigure and buffered:
            reconfigure(line_buffering=False)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (*saved, fd):
            os.close(f)
        if handler is not None:
            root.removeHandler(handler)
            root.setLevel(saved_level)


def call_stage(task: StageTask) -> tuple[str | None, str]:
    """Call the stage function in task.root with its output captured, and check that every
    declared output exists. Returns (error or None, captured output)."""
    os.chdir(task.root)
    error = None
    with _captured(task.log_path):
        try:
            if task.params is None:
                task.func()
            else:
                task.func(task.params)
        except (Exception, SystemExit) as exc:  # sys.exit() in a stage fails that stage only
            error = format_user_traceback(exc)
        finally:
            os.chdir(task.root)
    output = task.log_path.read_text(errors="replace") if task.log_path else ""
    if error is None:
        absent = [o.path for o in task.outs if not os.path.lexists(task.root / o.path)]
        if absent:
            error = (f"stage '{task.name}' did not produce declared output '{absent[0]}'; "
                     "write it in the stage or remove it from outs")
    return error, output


def execute(task: StageTask) -> StageResult:
    """Run one stage to completion: call it, check and cache its outputs. Runs in a worker."""
    start = time.perf_counter()
    error, output = call_stage(task)
    if error is not None:
        return StageResult(task.name, False, time.perf_counter() - start, error, output, pid=os.getpid())
    from pivot.cache import Cache, save_output

    cache = Cache(task.cache_dir or task.root / ".pivot" / "cache", task.link)
    records: list[PathRecord] = []
    memo: list[FileMemoRow] = []
    for o in task.outs:
        rec, rows = save_output(cache, task.root, o.path, o.kind, o.cached)
        records.append(rec)
        memo.extend(rows)
    return StageResult(task.name, True, time.perf_counter() - start, None, output, tuple(records), tuple(memo),
                       os.getpid())


class InlineExecutor:
    """Runs each stage in this process, at submit time. For tests and embedding."""

    remote = False

    def submit(self, task: StageTask) -> Future[StageResult]:
        fut: Future[StageResult] = Future()
        fut.set_result(execute(task))
        return fut

    def shutdown(self, kill: bool = False) -> None:
        pass


def _worker_init(root: str, parent: int) -> None:
    # Workers import the pipeline by module name, exactly as the parent registered it.
    from pivot.importing import install

    install(root)
    os.chdir(root)
    # Ctrl-C belongs to the parent, which stops the workers and rolls back what they did.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch_parent(parent)


def _watch_parent(parent: int) -> None:
    """A worker whose pivot process died (kill -9) must not live on and write outputs later.
    The parent's pid comes from the parent: it may already be gone when this worker boots."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="pivot-parent-watch", daemon=True).start()


class PoolExecutor:
    """A pool of warm worker processes (loky), reused for every stage of a run."""

    remote = False

    def __init__(self, jobs: int, root: Path) -> None:
        from loky import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init,
                                         initargs=(str(root), os.getpid()))
        # Start the workers now with Ctrl-C ignored (inherited through exec), so a Ctrl-C sent to
        # the whole process group while they boot cannot print their tracebacks; the parent
        # handles Ctrl-C by stopping them. A Ctrl-C in these few milliseconds is dropped.
        with _sigint_ignored():
            self._pool._ensure_executor_running()

    def submit(self, task: StageTask) -> Future[StageResult]:
        return self._pool.submit(execute, task)

    def shutdown(self, kill: bool = False) -> None:
        self._pool.shutdown(wait=not kill, kill_workers=kill)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to protect
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:
        count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)
