"""Watch mode's engine: which saved files matter, the file watcher, re-reading the user's code,
and the warm worker pool kept across runs (`pivot run --watch`, pivot/ops/watch.py).

The main process re-imports the project's modules before each run (Python cannot un-import, so
they are dropped from `sys.modules` and imported again from the bytes on disk): the stage
definitions, params models and module values the fingerprints read are then the saved ones.
Workers cannot be re-imported into: a pool whose workers may hold code that changed since they
started is replaced, and the new one imports the pipeline at once, while the main process decides
what is stale.
"""

from __future__ import annotations

import importlib
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from pivot.executor import LOCAL, Capabilities, PoolExecutor, StageResult, StageTask

if TYPE_CHECKING:
    from pivot.repo import Repo

# watchfiles groups the events of one save: a batch is yielded once no event came for STEP_MS
# (an editor's write-rename-chmod burst takes a few ms), or after DEBOUNCE_MS of steady writes.
STEP_MS = 50
DEBOUNCE_MS = 1_600
WAKE_MS = 200  # the watcher thread wakes this often without events (to notice a stop)

CONFIG_FILES = (".pivot/config.yaml", ".pivot/config.local.yaml")


def _is_user_file(filename: str, root: str) -> bool:
    full = os.path.abspath(filename)
    return full.startswith(root + os.sep) and "site-packages" not in full and full.endswith(".py")


def _user_modules(root: Path) -> dict[str, ModuleType]:
    """The project's modules loaded in this process, by name. Pivot's own never count (a
    checkout of Pivot may sit inside a project)."""
    base = str(root)
    found = {}
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if isinstance(f, str) and _is_user_file(f, base) and name.partition(".")[0] != "pivot":
            found[name] = mod
    return found


def user_code(root: Path) -> set[str]:
    """The project's source files loaded in this process: the pipeline module and everything it
    imported (what a worker imports to unpickle a stage function)."""
    return {os.path.abspath(str(mod.__file__)) for mod in _user_modules(root).values()}


def libraries(root: Path) -> set[str]:
    """The top-level packages outside the project that the project's loaded modules use
    (`pydantic`, `numpy`...): what a spare worker imports ahead of any project code."""
    own: set[str] = set()
    used: set[str] = set()
    for name, mod in _user_modules(root).items():
        own.add(name.partition(".")[0])
        for value in list(vars(mod).values()):
            try:
                where = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
            except Exception:  # an object whose attributes raise: not a library's
                continue
            if isinstance(where, str) and where:
                used.add(where.partition(".")[0])
    return used - own - {"builtins", "__main__"}


def reload_user_code(root: Path) -> None:
    """Forget the project's modules, so the next import of the pipeline reads them from disk."""
    for name in _user_modules(root):
        del sys.modules[name]
    importlib.invalidate_caches()  # a module saved since the last import is found


def pipeline_module(pipeline: str) -> str:
    """The module name a worker imports for the configured pipeline (`pipeline.py` or a name)."""
    if pipeline.endswith(".py"):
        return Path(pipeline).with_suffix("").as_posix().replace("/", ".")
    return pipeline


@dataclass(frozen=True)
class Triggers:
    """Which saved paths can make a stage stale: a dependency (or a file inside one), a tracked
    path, params.yaml, the configuration, and the project's Python files (the pipeline module and
    whatever a fingerprint reaches). Never an output (what a run writes), nor .git, .pivot or the
    cache. Before the pipeline has loaded: Python files, params and configuration."""

    root: str
    deps: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    cache: str = ""

    @classmethod
    def of(cls, repo: Repo, tracked: Iterable[str]) -> Triggers:
        deps = {d for s in repo.stages for d in repo.graph.deps[s.name]} | set(tracked)
        outs = {o.path for s in repo.stages for o in s.outs}
        return cls(str(repo.root), tuple(sorted(deps)), tuple(sorted(outs)), str(repo.cache.dir))

    def relative(self, path: str) -> str | None:
        """`path` relative to the root, when a change to it can matter; else None."""
        if self.cache and (path == self.cache or path.startswith(self.cache + os.sep)):
            return None
        if not path.startswith(self.root + os.sep):
            return None
        rel = Path(os.path.relpath(path, self.root)).as_posix()
        parts = rel.split("/")
        if rel in CONFIG_FILES or rel == "params.yaml":
            return rel
        if parts[0] in (".git", ".pivot") or "__pycache__" in parts or _under(rel, self.outs):
            return None
        if _under(rel, self.deps):
            return rel
        if rel.endswith(".py") and not any(p.startswith(".") or p == "site-packages" for p in parts):
            return rel
        return None


def _under(rel: str, paths: Iterable[str]) -> bool:
    return any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in paths)


def _noise(root: str) -> tuple[str, ...]:
    return tuple(os.path.join(root, d) + os.sep for d in (".git", ".pivot"))


class Changes:
    """Saved files, batched: a watchfiles watcher in a thread feeds a queue, so what is saved
    while a run goes on waits for the next batch, and Ctrl-C reaches the main thread."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self._queue: queue.Queue[set[str]] = queue.Queue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._failed: list[BaseException] = []
        self._thread = threading.Thread(target=self._watch, name="pivot-watch", daemon=True)

    def __enter__(self) -> Changes:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _watch(self) -> None:
        from watchfiles import watch  # lazy: watch mode only

        # Ctrl-C is the main thread's: blocked here, the kernel never hands it to this thread (or
        # the one watchfiles starts), so a Ctrl-C held while workers start is not lost here.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

        noise = _noise(self.root)
        config = tuple(os.path.join(self.root, f) for f in CONFIG_FILES)

        def keep(_change: object, path: str) -> bool:
            return path in config or not path.startswith(noise)

        try:
            for batch in watch(self.root, watch_filter=keep, debounce=DEBOUNCE_MS, step=STEP_MS,
                               stop_event=self._stop, rust_timeout=WAKE_MS, yield_on_timeout=True,
                               raise_interrupt=False):
                self._ready.set()
                if batch:
                    self._queue.put({path for _change, path in batch})
        except BaseException as exc:  # e.g. out of inotify watches: said in the main thread
            self._failed.append(exc)
            self._ready.set()
            self._queue.put(set())

    def ready(self, timeout: float = 10.0) -> None:
        """Wait until the watcher sees the project (a save from now on is seen)."""
        self._ready.wait(timeout)
        self._check()

    def _check(self) -> None:
        if self._failed:
            from pivot.errors import WatchError

            raise WatchError(f"cannot watch {self.root}: {self._failed[0]}")

    def next(self) -> set[str]:
        """The paths saved since the last call (waits for at least one batch). Waits in slices:
        a wait without a timeout is not woken by Ctrl-C when the signal reaches another thread."""
        while True:
            try:
                paths = self._queue.get(timeout=0.25)
                break
            except queue.Empty:
                self._check()
        while True:
            self._check()
            try:
                paths |= self._queue.get_nowait()
            except queue.Empty:
                return paths


def _digest(path: str) -> str | None:
    from pivot.hashing import hash_bytes  # lazy: one small file at a time

    try:
        with open(path, "rb") as f:
            return hash_bytes(f.read())
    except OSError:
        return None


class WarmPool:
    """The local worker pool, kept across watch runs. It is replaced when a source file its
    workers may have imported changed since it started (see `stale`). The replacement is a spare
    pool started while the watcher was idle, whose workers have imported the libraries the
    project uses but none of its code; it then imports the pipeline module in every worker at
    once, so the first stage waits neither for new processes nor for its imports."""

    def __init__(self, root: Path, jobs: int, module: str) -> None:
        self.root = root
        self.jobs = jobs
        self.module = module
        self._pool: PoolExecutor | None = None
        self._spare: PoolExecutor | None = None
        self._loaded: dict[str, str | None] = {}  # file -> its digest when the pool started
        self._started = 0.0

    def stale(self, files: Iterable[str]) -> bool:
        """Whether a worker may run other code than `files` hold now: one the pool knew changed,
        or one it did not know was saved after the pool started (its workers may have imported
        it before; a second of margin for coarse file times)."""
        if self._pool is None:
            return False
        for f in files:
            if f in self._loaded:
                if _digest(f) != self._loaded[f]:
                    return True
                continue
            try:
                if os.stat(f).st_mtime >= self._started - 1.0:
                    return True
            except OSError:
                return True
        return False

    def refresh(self, files: Iterable[str]) -> bool:
        """Replace the pool when it is stale for `files` (see `stale`); True when replaced."""
        files = set(files)
        if not self.stale(files):
            self._loaded.update({f: _digest(f) for f in files if f not in self._loaded})
            return False
        self.start(files)
        return True

    def start(self, files: Iterable[str]) -> None:
        self.stop(kill=True)
        self._started = time.time()
        self._loaded = {f: _digest(f) for f in files}  # before any worker imports them
        self._pool, self._spare = self._spare or PoolExecutor(self.jobs, self.root), None
        self._pool.preload([self.module], self.jobs)

    def warm(self, files: Iterable[str], modules: Iterable[str]) -> None:
        """Start the pool (on `files`) and the spare (importing `modules`) now."""
        if self._pool is None:
            self.start(files)
        self.spare(modules)

    def spare(self, modules: Iterable[str]) -> None:
        """Start the next pool now (the watcher is idle), importing `modules` (libraries only)."""
        if self._spare is None:
            self._spare = PoolExecutor(self.jobs, self.root)
            self._spare.preload(sorted(modules), self.jobs)

    def stop(self, kill: bool = False) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(kill=kill)

    def close(self) -> None:
        """Stop both pools (Ctrl-C)."""
        self.stop(kill=True)
        if self._spare is not None:
            spare, self._spare = self._spare, None
            spare.shutdown(kill=True)

    def executor(self) -> KeptExecutor:
        """The executor a Runner uses: this pool, which stays when the run ends."""
        if self._pool is None:
            self.start(self._loaded)
        return KeptExecutor(self)

    def submit(self, task: StageTask) -> Future[StageResult]:
        if self._pool is None:
            self.start(self._loaded)
        assert self._pool is not None
        return self._pool.submit(task)


class KeptExecutor:
    """A run's view of the warm pool: shutting it down at the end of a run keeps the workers;
    killing it (Ctrl-C, a worker that died) ends the pool, and the next run starts a new one."""

    capabilities: Capabilities = LOCAL

    def __init__(self, pool: WarmPool) -> None:
        self.pool = pool

    def submit(self, task: StageTask) -> Future[StageResult]:
        return self.pool.submit(task)

    def shutdown(self, kill: bool = False) -> None:
        if kill:
            self.pool.stop(kill=True)
