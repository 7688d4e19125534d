"""The local worker pool: warm worker processes, each reached through a pipe of its own, that
run one stage at a time and stay for the whole run.

A stage is handed over by writing its pickled task straight to an idle worker's pipe, from the
thread that submits it; one reader thread waits on every worker's answer pipe and on the
workers' process handles (pidfd), and settles each future. Nothing else runs in this process
between a submit and its answer: in a chain of short stages that hand-off is most of the time
per stage, and a pool with a manager thread and a feeder thread (loky) pays three thread
hand-offs and a contended GIL per stage where this pays one (issue #19).

A worker that dies (killed, out of memory, os._exit) breaks the pool: every stage it still
holds fails with BrokenProcessPool, which the runner answers by stopping the pool and running
those stages again alone (pivot/run.py). Stages with a timeout or GPUs run in a process of
their own (`Solo`, pivot/executor/local.py).

A run's pool (`fork=True`) forks its workers from the `pivot` process, which has imported Python's
and Pivot's modules and the pipeline's libraries already, so a worker is ready at once instead of
after starting Python and importing them again (about 0.1 s of CPU per worker, most of a small
pipeline's first run). The project's own modules (the pipeline, its helpers) are dropped in the
worker and imported again there, as a started worker does: their top-level code runs in each
worker, into module state of its own. Only when that is safe: no other thread is alive in this
process (a fork copies a lock another thread holds, locked for good); else, and for watch mode
(whose workers must import the code as it is now), a worker is a new interpreter (`BOOT`). A
forked worker closes this process's ends of its pipes, the other workers' pipes and the project
lock; it never uses what else it inherited of this process besides the imported modules, and
never returns into this process's stack: it leaves with os._exit.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import pickle
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from pivot.executor.base import LOCAL, Capabilities, StageResult, StageTask
from pivot.executor.local import Solo, execute, preload_modules, sigint_held, worker_init
from pivot.importing import forget_project_modules

if TYPE_CHECKING:
    import subprocess

# The first entry of sys.path (`-c`: the working folder, which is the project) is dropped before
# anything is imported: a project's logging.py or pickle.py must not stand in for the standard
# library's in the worker (the project's folder is put on sys.path by `install`, after them).
BOOT = "import sys; del sys.path[0]; from pivot.executor.workers import serve; serve()"
TASK, PRELOAD = b"T", b"P"
_HEADER = 8  # bytes of a message's length, before it
_JOINED = 1 << 16  # a message under this size goes in one write with its header


class Pipe:
    """One end of a pipe carrying whole messages (each after its length): what the pool used of
    multiprocessing's Connection, without importing multiprocessing (and socket, and queues)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def send_bytes(self, data: bytes) -> None:
        head = len(data).to_bytes(_HEADER, "little")
        for part in ((head + data,) if len(data) < _JOINED else (head, data)):
            view = memoryview(part)
            while view:
                view = view[os.write(self.fd, view):]

    def recv_bytes(self) -> bytes:
        """The next message; EOFError once the other end is closed."""
        return self._exactly(int.from_bytes(self._exactly(_HEADER), "little"))

    def _exactly(self, size: int) -> bytes:
        data = os.read(self.fd, size)
        if len(data) == size:
            return data
        parts = [data]
        got = len(data)
        while got < size:
            if not data:
                raise EOFError("the pipe was closed")
            data = os.read(self.fd, size - got)
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


def dumps_task(task: object) -> bytes:
    """A task as bytes: pickle (functions by reference, the worker imports their module), else
    cloudpickle for a function pickle cannot name (a closure, a lambda), as loky did."""
    try:
        return pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        import cloudpickle  # lazy: only for stage functions that are not importable by name

        data: bytes = cloudpickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
        return data


def serve() -> None:
    """A started worker's life (`BOOT`): its pipes, project and parent from the command line."""
    _serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))


def _serve(task_fd: int, answer_fd: int, root: str, parent: int) -> None:
    """A worker's life: tasks in, results out, until its pipe closes. Runs in the worker."""
    for fd in (task_fd, answer_fd):  # a stage's child processes need not hold them
        os.set_inheritable(fd, False)
    tasks, answers = Pipe(task_fd), Pipe(answer_fd)
    worker_init(root, parent)
    while True:
        try:
            message = tasks.recv_bytes()
        except (EOFError, OSError):
            return  # the pool closed: done
        if message[:1] == PRELOAD:
            with contextlib.suppress(BaseException):  # a broken import is the run's to report
                preload_modules(pickle.loads(message[1:]))
            continue
        answers.send_bytes(_answer(message[1:]))


def _answer(payload: bytes) -> bytes:
    """The pickled outcome of one task: ("ok", result) or ("error", type name, text, exception)."""
    try:
        return pickle.dumps(("ok", execute(pickle.loads(payload))), protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException as exc:  # storing the outputs failed, or the task did not unpickle
        try:
            blob = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # an exception that does not pickle: its type and text still tell
            blob = b""
        return pickle.dumps(("error", type(exc).__name__, str(exc), blob), protocol=pickle.HIGHEST_PROTOCOL)


def _outcome(data: bytes) -> StageResult | BaseException:
    answer = pickle.loads(data)
    if answer[0] == "ok":
        result: StageResult = answer[1]
        return result
    _kind, name, text, blob = answer
    if blob:
        with contextlib.suppress(Exception):  # an exception whose class does not unpickle
            exc: BaseException = pickle.loads(blob)
            return exc
    return RuntimeError(f"{name}: {text}")


def single_threaded() -> bool:
    """Whether this process runs one thread only, native threads included (a library's thread
    pool is invisible to `threading`). False where that cannot be told."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _spawned(task_fd: int, answer_fd: int, root: Path, parent: int) -> subprocess.Popen[bytes]:
    import subprocess  # lazy: a no-op run starts no workers

    return subprocess.Popen([sys.executable, "-c", BOOT, str(task_fd), str(answer_fd), str(root), str(parent)],
                            pass_fds=(task_fd, answer_fd), stdin=subprocess.DEVNULL, cwd=root)


def _forked(task_fd: int, answer_fd: int, root: Path, parent: int, closing: list[int],
            others: list[_Worker]) -> Forked:
    """A worker forked from this process (see the module's docstring). `closing`: this process's
    ends of the worker's pipes; `others`: the workers forked before it."""
    from pivot.runlock import held_fds  # lazy: with the workers

    for stream in (sys.stdout, sys.stderr):  # nothing buffered here may be written twice
        with contextlib.suppress(Exception):
            stream.flush()
    pid = os.fork()
    if pid:
        return Forked(pid)
    code = 1
    try:
        # The other workers' pipes (each must see its end when this process closes it) and the
        # project lock (it goes with pivot) are closed; what the pipeline's import opened (a
        # logging file, say) stays open, as it would after its import in a worker started afresh.
        for w in others:
            w.close()
        for fd in (*closing, *held_fds()):
            with contextlib.suppress(OSError):
                os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        gc.enable()  # as in a started worker (this process may hold it while it decides stages)
        gc.freeze()  # what this process made is never collected here: its pages stay shared
        forget_project_modules()  # the pipeline is imported again here (preload, or the first task)
        _reseed()
        _serve(task_fd, answer_fd, str(root), parent)
        code = 0
    except BaseException:
        with contextlib.suppress(BaseException):
            import traceback  # lazy: a forked worker that failed to start

            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code)  # never back into the stack of the process it was forked from


def _reseed() -> None:
    """numpy's global random state, when the pipeline's import loaded numpy, drawn afresh as in a
    worker started anew (Python's `random` reseeds itself after a fork; numpy does not): forked
    workers of one run must not draw the same unseeded numbers."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        with contextlib.suppress(Exception):
            numpy.random.seed()


class Forked:
    """A forked worker process, with what the pool uses of subprocess.Popen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped already: nothing more to know
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        while self.returncode is None:
            try:
                _pid, status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                self.returncode = -1
            else:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


class _Worker:
    def __init__(self, root: Path, parent: int, fork: bool, others: list[_Worker]) -> None:
        task_r, task_w = os.pipe()
        answer_r, answer_w = os.pipe()
        try:
            self.proc: subprocess.Popen[bytes] | Forked = (
                _forked(task_r, answer_w, root, parent, [task_w, answer_r], others) if fork
                else _spawned(task_r, answer_w, root, parent))
        except BaseException:
            for fd in (task_w, answer_r):
                os.close(fd)
            raise
        finally:
            os.close(task_r)
            os.close(answer_w)
        self.tasks = Pipe(task_w)
        self.answers = Pipe(answer_r)
        self.sending = threading.Lock()  # the submitting thread and the reader both send
        self.future: Future[StageResult] | None = None
        self.sentinel: int | None = None
        with contextlib.suppress(AttributeError, OSError):  # no pidfd: the reader polls instead
            self.sentinel = os.pidfd_open(self.proc.pid)

    def send(self, data: bytes) -> None:
        with self.sending, contextlib.suppress(OSError):  # it died: the reader fails its stage
            self.tasks.send_bytes(data)

    def close(self) -> None:
        for conn in (self.tasks, self.answers):
            with contextlib.suppress(OSError):
                conn.close()
        if self.sentinel is not None:
            with contextlib.suppress(OSError):
                os.close(self.sentinel)
            self.sentinel = None


class PoolExecutor:
    """A pool of `jobs` warm worker processes, reused for every stage of a run."""

    capabilities: Capabilities = LOCAL

    def __init__(self, jobs: int, root: Path, pumped: bool = False, fork: bool = False) -> None:
        self._root = root
        self._pumped = pumped
        self._solos: set[Solo] = set()
        self._lock = threading.Lock()
        self._queue: deque[tuple[Future[StageResult], bytes]] = deque()
        self._broken: str | None = None
        self._closing = False
        # Started with Ctrl-C ignored (inherited through exec): a Ctrl-C sent to the whole process
        # group while they boot cannot print their tracebacks; this process gets it once they are
        # started (held, not dropped) and handles it by stopping them. Forked (see the module's
        # docstring) only by a pumped pool, which starts no thread of its own.
        self._workers: list[_Worker] = []
        with sigint_held():
            for _ in range(max(1, jobs)):
                self._workers.append(_Worker(root, os.getpid(), fork and pumped and single_threaded(), self._workers))
        self._idle = list(self._workers)
        self._polled = any(w.sentinel is None for w in self._workers)  # no pidfd: look every half second
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)  # a full pipe wakes the waiter as well as one byte more
        self._reader: threading.Thread | None = None
        if not pumped:
            self._reader = threading.Thread(target=self._read, name="pivot-pool-reader", daemon=True)
            self._reader.start()

    def submit(self, task: StageTask) -> Future[StageResult]:
        if task.limits.timeout is not None or task.env:
            solo = Solo(task, self._root, self._solos)
            self._solos.add(solo)
            if self._pumped:  # its end must interrupt a `wait` blocked on the workers' pipes
                solo.future.add_done_callback(self._wake)
            return solo.future
        fut: Future[StageResult] = Future()
        fut.set_running_or_notify_cancel()
        try:
            data = TASK + dumps_task(task)
        except Exception as exc:  # a stage function or params that cannot be sent: that stage fails
            fut.set_exception(exc)
            return fut
        with self._lock:
            if self._broken is not None:
                fut.set_exception(_broken(self._broken))
                return fut
            if not self._idle:
                self._queue.append((fut, data))
                return fut
            worker = self._idle.pop()
            worker.future = fut
        worker.send(data)
        return fut

    def preload(self, modules: list[str], count: int) -> None:
        """Import `modules` in the workers now, ahead of their first stage (watch mode,
        pivot/watcher.py). `count` is for compatibility: every worker imports them once."""
        data = PRELOAD + pickle.dumps(list(modules))
        for worker in self._workers[:max(1, count)]:
            worker.send(data)

    def wait(self, futures: list[Future[StageResult]], timeout: float | None = None) -> set[Future[StageResult]]:
        """The futures that are done, as soon as one is (or none, after `timeout` seconds). A pumped
        pool reads its workers' answers here, in the waiting thread: no thread between a worker
        and the runner."""
        from concurrent.futures import FIRST_COMPLETED
        from concurrent.futures import wait as wait_futures

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            done = {f for f in futures if f.done()}
            left = None if deadline is None else deadline - time.monotonic()
            if done or (left is not None and left <= 0):
                return done
            if not self._pumped or self._closing or self._broken is not None:
                return wait_futures(futures, left, FIRST_COMPLETED).done
            self._poll(left)

    def _wake(self, _fut: object) -> None:
        with self._lock, contextlib.suppress(OSError):  # full (BlockingIOError): awake already
            if self._wake_w >= 0:  # not closed by shutdown (its number may be another file's now)
                os.write(self._wake_w, b"x")

    def _read(self) -> None:
        """The reader thread of a pool that is not pumped. It takes no Ctrl-C: the signal goes to
        the main thread, whose waits it must interrupt."""
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        while not self._closed() and self._poll(None):
            pass

    def _poll(self, timeout: float | None) -> bool:
        """Wait up to `timeout` seconds for answers and settle them; a dead worker breaks the
        pool. False once the pool is broken or closing."""
        waited: list[int] = [self._wake_r]
        for w in self._workers:
            waited.append(w.answers.fd)
            if w.sentinel is not None:
                waited.append(w.sentinel)
        if self._polled:
            timeout = 0.5 if timeout is None else min(timeout, 0.5)
        try:
            ready = _ready(waited, timeout)
        except (OSError, ValueError):  # closed under it by shutdown
            return False
        if self._closed():
            return False
        if self._wake_r in ready:
            os.read(self._wake_r, 4096)
        for w in self._workers:
            if w.answers.fd in ready:
                self._answered(w)
        dead = [w for w in self._workers if (w.sentinel in ready or self._polled) and w.proc.poll() is not None]
        if dead:
            self._break(f"a worker process (pid {dead[0].proc.pid}) died with exit code {dead[0].proc.returncode}")
            return False
        return True

    def _closed(self) -> bool:
        return self._closing  # set by shutdown, from another thread

    def _answered(self, worker: _Worker) -> None:
        try:
            data = worker.answers.recv_bytes()
        except (EOFError, OSError):
            return  # it died: its sentinel (or the next poll) breaks the pool
        try:
            outcome = _outcome(data)
        except Exception as exc:  # a result that does not unpickle here
            outcome = RuntimeError(f"the answer of a worker could not be read ({type(exc).__name__}: {exc})")
        with self._lock:
            fut, worker.future = worker.future, None
            following = self._queue.popleft() if self._queue else None
            if following is None:
                self._idle.append(worker)
            else:
                worker.future = following[0]
        if following is not None:
            worker.send(following[1])
        if fut is None:
            return
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)

    def _break(self, why: str) -> None:
        """Fail every stage the pool holds (running or queued) and accept no more."""
        with self._lock:
            self._broken = self._broken or why
            failed = [w.future for w in self._workers if w.future is not None]
            failed += [fut for fut, _data in self._queue]
            for w in self._workers:
                w.future = None
            self._queue.clear()
            self._idle.clear()
        for fut in failed:
            if not fut.done():
                fut.set_exception(_broken(why))

    # -- the end -----------------------------------------------------------
    def shutdown(self, kill: bool = False) -> None:
        if self._closing:
            return
        for solo in list(self._solos):
            solo.stop(kill)
        if not kill:  # let the running and queued stages finish
            with self._lock:
                pending = [w.future for w in self._workers if w.future is not None]
                pending += [fut for fut, _data in self._queue]
            while pending and not self.wait(pending) >= set(pending):
                pending = [f for f in pending if not f.done()]
        self._closing = True
        if kill:
            self._kill()
        for w in self._workers:
            with contextlib.suppress(OSError):
                w.tasks.close()  # a waiting worker reads the end and leaves
        for w in self._workers:
            w.proc.wait()
        self._wake(None)
        if self._reader is not None and threading.current_thread() is not self._reader:
            self._reader.join()
        self._break("the worker pool was shut down")
        for w in self._workers:
            w.close()
        with self._lock:
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake_w = -1
        self._workers = []

    def _kill(self) -> None:
        """Kill every worker and the processes its stage started."""
        from loky.backend.utils import kill_process_tree  # lazy: only when a run is stopped

        for w in self._workers:
            if w.proc.poll() is None:
                with contextlib.suppress(OSError):
                    kill_process_tree(_Killable(w.proc))


def _ready(fds: list[int], timeout: float | None) -> set[int]:
    """Which of `fds` can be read (or are closed at the other end: a dead worker's pidfd, a
    pipe's end), waiting up to `timeout` seconds (None: until one is)."""
    import select  # lazy: with the workers

    poller = select.poll()
    for fd in fds:
        if fd < 0:
            raise ValueError("a closed pipe")
        poller.register(fd, select.POLLIN)
    millis = None if timeout is None else max(0, math.ceil(timeout * 1000))
    while True:
        try:
            return {fd for fd, _events in poller.poll(millis)}
        except InterruptedError:  # retried by Python itself (PEP 475); kept for other platforms
            continue


def _broken(why: str) -> BaseException:
    """The error of a stage the broken pool held (the runner retries it alone, pivot/run.py)."""
    from concurrent.futures.process import BrokenProcessPool  # lazy: only when a pool breaks

    return BrokenProcessPool(why)


class _Killable:
    """A Popen as loky's kill_process_tree expects a process (pid, kill, join)."""

    def __init__(self, proc: subprocess.Popen[bytes] | Forked) -> None:
        self.pid, self._proc = proc.pid, proc

    def kill(self) -> None:
        self._proc.kill()

    def join(self) -> None:
        self._proc.wait()
