"""pivot run --watch: run what is stale, then, each time a file that matters is saved, run what
the save made stale (the decision of `pivot status`), with the worker pool kept warm between
runs. Ctrl-C ends it like any run: the run under way is rolled back (docs/watch.md)."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from pivot import tracked
from pivot.errors import FlagMisuse, PivotError
from pivot.ops.run import RunRequest, remote_source, set_params
from pivot.reporter import Reporter, Summary
from pivot.workspace import Workspace

if TYPE_CHECKING:
    from pivot.watcher import Changes, Triggers, WarmPool


def watch_pipeline(request: RunRequest, reporter: Reporter) -> NoReturn:
    """Run, then watch and run again, until Ctrl-C (KeyboardInterrupt, which propagates)."""
    from pivot.executor import available_cpus  # lazy: start-up
    from pivot.watcher import Changes, Triggers, WarmPool, pipeline_module  # lazy: watch mode only

    check_watch_flags(request)
    with Workspace.find() as ws:
        root, config = ws.root, ws.config
    pool = WarmPool(root, request.jobs or available_cpus(), pipeline_module(config.pipeline))
    session = Session(root, request, reporter, pool, Triggers(str(root)))
    if config.executor.get("kind", "local") != "local" and request.executor is None:
        reporter.note("watch: stages run in the local pool (executor.kind in .pivot/config.yaml applies "
                      "to pivot run without --watch)")
    try:
        with Changes(root) as changes:
            session.loop(changes)
    finally:
        pool.close()


def check_watch_flags(request: RunRequest) -> None:
    if request.dry_run:
        raise FlagMisuse("--watch runs stages; it cannot be combined with --dry-run (use pivot status)")
    for flag, given in (("--executor dask", request.executor == "dask"), ("--scheduler", request.scheduler),
                        ("--remote", request.remote), ("--no-download", request.no_download)):
        if given:
            raise FlagMisuse(f"{flag} cannot be combined with --watch, which runs stages in the local pool")


class Session:
    """One `pivot run --watch`: the runs so far, what triggers the next, the warm pool."""

    def __init__(self, root: Path, request: RunRequest, reporter: Reporter, pool: WarmPool,
                 triggers: Triggers) -> None:
        self.root = root
        self.request = request
        self.reporter = reporter
        self.pool = pool
        self.triggers = triggers
        self.code: set[str] = set()  # the project's source files the last load imported
        self.runs = 0

    def loop(self, changes: Changes) -> NoReturn:
        self.cycle([])
        changes.ready()
        self.reporter.watching(self.runs)
        self.idle()
        while True:
            saved = sorted({rel for p in changes.next() if (rel := self.triggers.relative(p)) is not None})
            if saved:
                self.cycle(saved)
                self.reporter.watching(self.runs)
                self.idle()

    def idle(self) -> None:
        """Waiting for a save: get the next pool ready, with the libraries the project uses."""
        self.pool.spare(self.libraries())

    def libraries(self) -> set[str]:
        from pivot.watcher import libraries  # lazy: watch mode only

        return libraries(self.root) | {"pivot.cache"}

    def cycle(self, saved: list[str]) -> None:
        """Load the pipeline as saved now and run what is stale. A run that does nothing (all up
        to date) says so in one line; a pipeline that does not load is reported, and the next
        save tries again."""
        from pivot.run import Runner, RunOptions  # lazy: loads the pipeline machinery
        from pivot.watcher import Triggers, pipeline_module, reload_user_code, user_code  # lazy: watch mode only

        first = not saved
        if any(s.endswith(".py") for s in saved):
            self.pool.refresh(self.code)  # workers start on the new code while this process loads it
        gc.unfreeze()  # what the last cycle kept from the collector (its pipeline, its run) can go now
        reload_user_code(self.root)
        req = self.request
        opts = RunOptions(req.stages, req.force and first, False, req.single_stage, req.keep_going,
                          run_cache=not req.no_run_cache)
        held = Held(self.reporter, self.runs + 1, saved, quiet=not first)
        try:
            with Workspace(self.root) as ws:
                try:
                    repo = ws.repo
                except PivotError:
                    self.code |= user_code(self.root)  # what did import, for the pool to compare
                    raise
                self.code = user_code(self.root)
                self.triggers = Triggers.of(repo, tracked.paths(self.root))
                self.pool.module = pipeline_module(ws.config.pipeline)  # the worker's import, as configured now
                self.pool.refresh(self.code)
                if first:  # both pools boot during the first run, ready for the first save
                    self.pool.warm(self.code, self.libraries())
                source = None if req.no_pull else remote_source(ws, None, ask=True)
                with ws.lock("run"):
                    if first and req.set_params:  # -S applies once, to the first run
                        set_params(repo, held, req.set_params, False)
                    Runner(repo, held, jobs=self.pool.jobs, executor_factory=self.pool.executor,
                           source=source).run(opts)
        except PivotError as exc:
            held.error(str(exc))
        if held.released:
            self.runs += 1


class Held(Reporter):
    """A watch run's reporter: the events of a run that only finds everything up to date are
    held back and replaced by one `unaffected` line; as soon as the run does anything (runs,
    restores, fails, warns), the run's boundary and everything held are passed on, and the rest
    of the run goes straight through, as in `pivot run`."""

    def __init__(self, to: Reporter, run: int, saved: list[str], quiet: bool) -> None:
        self.to = to
        self.run = run
        self.saved = saved
        self.released = False
        self._held: list[tuple[str, tuple[object, ...]]] = []
        if not quiet:
            self.release()

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.to.watch_run(self.run, self.saved)
        for name, args in self._held:
            getattr(self.to, name)(*args)
        self._held.clear()

    def _pass(self, name: str, *args: object, hold: bool = False) -> None:
        if not self.released and hold:
            self._held.append((name, args))
            return
        self.release()
        getattr(self.to, name)(*args)

    def error(self, error: str) -> None:
        """The pipeline did not load, the project was busy, or the run stopped on an error."""
        self.to.watch_error(error, self.saved)

    def running(self, stage: str, reasons: tuple[str, ...]) -> None:
        self._pass("running", stage, reasons)

    def done(self, stage: str, seconds: float, worker: str = "",
             timings: tuple[tuple[str, float], ...] = ()) -> None:
        self._pass("done", stage, seconds, worker, timings)

    def skipped(self, stage: str, restored: list[str], reasons: tuple[str, ...] = (),
                remote: str | None = None, from_remote: list[str] | None = None) -> None:
        self._pass("skipped", stage, restored, reasons, remote, from_remote, hold=not restored)

    def would_run(self, stage: str, reasons: tuple[str, ...]) -> None:
        self._pass("would_run", stage, reasons)

    def restored(self, stage: str, where: str, remote: str | None, paths: list[str]) -> None:
        self._pass("restored", stage, where, remote, paths)

    def run_cache_lookup(self, keys: int, hits: int, remote: str, seconds: float, opening: float = 0.0) -> None:
        self._pass("run_cache_lookup", keys, hits, remote, seconds, opening, hold=True)

    def failed(self, stage: str, error: str) -> None:
        self._pass("failed", stage, error)

    def not_run(self, stage: str, why: str) -> None:
        self._pass("not_run", stage, why)

    def note(self, text: str) -> None:
        self._pass("note", text)

    def warning(self, text: str) -> None:
        self._pass("warning", text)

    def output(self, stage: str, text: str) -> None:
        self._pass("output", stage, text)

    def progress(self, done: int, total: int, running: list[str], elapsed: float) -> None:
        if self.released:
            self.to.progress(done, total, running, elapsed)

    def summary(self, s: Summary, dry_run: bool = False) -> None:
        if self.released:
            self.to.summary(s, dry_run)
        else:
            self.to.unaffected(self.saved)
