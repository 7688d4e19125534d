"""The local executors' pieces: the worker's set-up (`worker_init`), a stage in a process of its
own (`Solo`, loky), and an inline executor that runs each stage in this process (tests, embedding). Also the
stage call itself (`call_stage`), which the Dask worker uses as well."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

from pivot.executor.base import LOCAL, Capabilities, StageResult, StageTask
from pivot.records import FileMemoRow, PathRecord


def format_user_traceback(exc: BaseException) -> str:
    """The traceback from the stage function down, without Pivot's own frames."""
    tb = exc.__traceback__
    here = os.path.abspath(__file__)
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) == here:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()


@contextmanager
def _captured(log_path: Path | None, written: list[int]) -> Iterator[None]:
    """Send fds 1 and 2 (so print, logging and child processes alike) to the log file; the
    log's size when the stage is done goes to `written`."""
    if log_path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:  # the logs folder is made once, not checked for each stage
        fd = os.open(log_path, flags, 0o644)
    except FileNotFoundError:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log_path, flags, 0o644)
    saved = os.dup(1), os.dup(2)
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
        written.append(os.fstat(fd).st_size)
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
    written: list[int] = []
    with _captured(task.log_path, written):
        try:
            if task.params is None:
                task.func()
            else:
                task.func(task.params)
        except (Exception, SystemExit) as exc:  # sys.exit() in a stage fails that stage only
            error = format_user_traceback(exc)
        finally:
            os.chdir(task.root)
    # A stage that wrote nothing (most do) costs no second opening of its log.
    output = task.log_path.read_text(errors="replace") if task.log_path and written != [0] else ""
    if error is None:
        absent = [o.path for o in task.outs if not os.path.lexists(task.root / o.path)]
        if absent:
            error = (f"stage '{task.name}' did not produce declared output '{absent[0]}'; "
                     "write it in the stage or remove it from outs")
    if error is None:
        error = escaped_output(task)
    return error, output


_REALS: dict[str, tuple[str, str]] = {}  # a project root -> its real location and its cache's


def escaped_output(task: StageTask) -> str | None:
    """Why the stage's outputs must not be cached, when one of them (or a folder on the way, or
    a link inside an output folder) now leads outside the project through a symbolic link the
    stage made; else None. Nothing is read through such a link."""
    from pivot.confine import Confinement, reals  # lazy: only when a stage succeeded

    real = _REALS.get(str(task.root))
    if real is None:  # once per worker: the project root does not move between its stages
        real = _REALS[str(task.root)] = reals(task.root)
    confinement = Confinement(task.root, listing=False, real=real)  # a few paths: no folder listings
    for o in task.outs:
        found = confinement.escape(o.path)
        if found is not None:
            path, problem = found
            what = f"output '{o.path}'" if path == o.path else f"output '{o.path}' holds '{path}', which"
            return (f"stage '{task.name}': {what} {problem}; Pivot caches nothing through such a link: "
                    "write real files inside the project")
    return None


def execute(task: StageTask) -> StageResult:
    """Run one stage to completion: call it, check and cache its outputs. Runs in a worker."""
    start = time.perf_counter()
    error, output = call_stage(task)
    if error is not None:
        return StageResult(task.name, False, time.perf_counter() - start, error, output, pid=os.getpid())
    from pivot.cache import Cache, save_output  # lazy: only workers store outputs

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

    capabilities: Capabilities = LOCAL

    def submit(self, task: StageTask) -> Future[StageResult]:
        fut: Future[StageResult] = Future()
        fut.set_result(execute(task))
        return fut

    def shutdown(self, kill: bool = False) -> None:
        pass


def worker_init(root: str, parent: int, env: tuple[tuple[str, str], ...] = ()) -> None:
    # Workers import the pipeline by module name, exactly as the parent registered it.
    from pivot.importing import install  # lazy: runs in the worker only

    os.environ.update(env)  # before any user code: CUDA reads CUDA_VISIBLE_DEVICES once per process
    install(root)
    os.chdir(root)
    # Ctrl-C belongs to the parent, which stops the workers and rolls back what they did. The
    # worker may have started with it blocked too (sigint_held): undone once it is ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _watch_parent(parent)


def _watch_parent(parent: int) -> None:
    """A worker whose pivot process died (kill -9) must not live on and write outputs later.
    The parent's pid comes from the parent: it may already be gone when this worker boots."""
    import threading  # lazy: workers only

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="pivot-parent-watch", daemon=True).start()


class Solo:
    """One stage in a worker process of its own, started for it: a stage with a timeout (its
    process is killed when the time is up, and the other stages' workers are not touched) or
    with GPUs (CUDA_VISIBLE_DEVICES is set before the process imports anything)."""

    def __init__(self, task: StageTask, root: Path, solos: set[Solo]) -> None:
        import threading  # lazy: only stages with a timeout or GPUs

        from loky import ProcessPoolExecutor  # lazy: start-up

        self.future: Future[StageResult] = Future()
        self.future.set_running_or_notify_cancel()
        self._task, self._solos, self._lock = task, solos, threading.Lock()
        self._start = time.perf_counter()
        with sigint_held():
            self._pool = ProcessPoolExecutor(max_workers=1, initializer=worker_init,
                                             initargs=(str(root), os.getpid(), task.env))
            inner = self._pool.submit(execute, task)
        self._timer = None
        if task.limits.timeout is not None:
            self._timer = threading.Timer(task.limits.timeout, self._expire)
            self._timer.daemon = True
            self._timer.start()
        inner.add_done_callback(self._finished)

    def _settle(self, result: StageResult) -> None:
        with self._lock:
            if self.future.done():
                return
            self.future.set_result(result)
        self._solos.discard(self)

    def _expire(self) -> None:
        """The time is up: kill the process (what the stage wrote is rolled back by the runner)."""
        if self.future.done():
            return
        self._pool.shutdown(wait=False, kill_workers=True)
        task = self._task
        seconds = task.limits.timeout or 0.0
        self._settle(StageResult(task.name, False, time.perf_counter() - self._start,
                                 f"stage '{task.name}' timed out after {seconds:g}s: its process was killed and what "
                                 "it wrote removed; raise its timeout= or make it faster", timed_out=True))

    def _finished(self, inner: Future[StageResult]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        try:
            result = inner.result()
        except Exception as exc:  # the process died (killed, out of memory, os._exit), or was stopped
            result = StageResult(self._task.name, False, time.perf_counter() - self._start,
                                 f"the worker process running it died ({type(exc).__name__})")
        self._settle(result)
        self._pool.shutdown(wait=False)

    def stop(self, kill: bool) -> None:
        """The run ends: wait for the stage (kill=False) or kill its process now."""
        if kill:
            if self._timer is not None:
                self._timer.cancel()
            self._pool.shutdown(wait=False, kill_workers=True)
        else:
            self.future.exception()
def preload_modules(modules: list[str]) -> None:
    """Import modules in a worker, ignoring failures: a pipeline that does not import is
    reported by the run that needs it, not by a worker warming up."""
    for module in modules:
        with contextlib.suppress(BaseException):  # a broken import is the run's to report
            importlib.import_module(module)


def _start_resource_trackers() -> None:
    """Start the resource trackers (loky's and multiprocessing's) that the first pool would start:
    multiprocessing's unblocks SIGINT when it has started its process, which would undo
    sigint_held halfway (and loky's threads started after that would not block SIGINT)."""
    from multiprocessing import resource_tracker  # lazy: with the pool

    from loky.backend import resource_tracker as loky_tracker  # lazy: with the pool

    loky_tracker.ensure_running()
    resource_tracker.ensure_running()


@contextmanager
def sigint_held() -> Iterator[None]:
    """While worker processes start: SIGINT ignored, which the children inherit through exec (a
    Ctrl-C sent to the process group while they boot cannot print their tracebacks), and blocked
    in this thread, so that one arriving meanwhile is not dropped (Linux keeps a blocked signal
    pending even when it is ignored) but handled on leaving, once the handler is back."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to protect
        yield
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if hasattr(signal, "pthread_sigmask") else None
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
