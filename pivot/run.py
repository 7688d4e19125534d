"""The runner: decide each stage in order, restore or run it, then cache its outputs and lock it."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pivot import atomic, fresh, runsetup
from pivot.backups import Backups, clear_leftovers
from pivot.budget import Budget, refusal
from pivot.errors import PivotError, ResourceError, WorkerRefused
from pivot.executor.base import LOCAL, Capabilities, Executor, OutSpec, StageResult, StageTask
from pivot.executor.workers import PoolExecutor
from pivot.graph import Frontier
from pivot.landing import Landing
from pivot.layout import stage_file
from pivot.limits import DEFAULT
from pivot.lock import StageLock
from pivot.outputs import Out
from pivot.planning import Planned, plan
from pivot.records import NeededOutput, PathRecord
from pivot.repo import Prepared, Repo, gc_paused
from pivot.reporter import Reporter, Summary
from pivot.runcache import Hit, RunCache, key_of
from pivot.speculate import followers
from pivot.status import UP_TO_DATE, Decision, decide

# The local pool (with concurrent.futures, logging and pickle) is imported with this module, before the
# pipeline: a project module named like one of the standard library's (logging.py) must not stand in for
# them, here or in the forked workers.

if TYPE_CHECKING:
    from pivot.remote import Storage


@dataclass(frozen=True)
class RunOptions:
    targets: tuple[str, ...] = ()
    force: bool = False
    dry_run: bool = False
    single_stage: bool = False
    keep_going: bool = False
    run_cache: bool = True  # False (--no-run-cache): run stale stages even when a run record would restore them


class Runner:
    """Schedules stages: each starts as soon as the stages it needs are done, up to `jobs` at
    a time. Decisions, backups and lock writes happen here; running and caching happen in
    the executor's workers.

    With a remote executor (a cluster that shares nothing with this machine but the remote),
    a stage's outputs come back as hashes: they are brought from the cache into the workspace
    here (or, with --no-download, left on the remote) before its lock is written. A lock is
    only ever written once its outputs are in the local cache, or on the remote when not
    downloading (see pivot/landing.py). `jobs=None`: as many stages at once as the executor
    offers (`capabilities.slots`)."""

    def __init__(self, repo: Repo, reporter: Reporter, jobs: int | None = 1,
                 executor_factory: Callable[[], Executor] | None = None,
                 source: fresh.Source | None = None) -> None:
        self.repo = repo
        self.source = source  # the remote missing outputs are fetched from instead of re-run
        self.from_remote: set[str] = set()  # output paths this run fetched from it
        self.runs = RunCache(repo, reporter, source)  # records every run; looked up unless --no-run-cache
        self.hits: dict[str, Hit] = {}  # stages the up-front lookup found, objects in the cache
        self._opened: Storage | None = None
        self.root = repo.root
        self.reporter = reporter
        self._auto_jobs = jobs is None
        self.jobs = max(1, jobs or 1)
        # Workers: see runsetup.workers. Their answers are read in `_wait` (pumped), by no thread of the
        # pool; forked from this process, which has the pipeline imported, when that is safe.
        self._factory = executor_factory or (lambda: PoolExecutor(
            runsetup.workers(self.repo.graph, self.state, self.jobs), self.root, pumped=True, fork=True))
        self._executor: Executor | None = None
        self._default_pool = executor_factory is None  # the local pool, started early on a first run
        self._unrecorded: list[tuple[Prepared, StageLock]] = []  # run records not yet written (_record_runs)
        self.attempts: dict[str, int] = {}  # a stage -> its attempts so far, when it has retries
        self.force = False
        # A local run shares out this machine's CPUs, memory and GPUs; a cluster does its own.
        gpus = any(s.limits.gpus for s in repo.stages)
        self.budget = Budget.of_machine(gpus, self.jobs) if executor_factory is None else None
        self.backups = Backups(self.root, repo.project.tmp_dir / "backup")
        self.logs_dir = repo.project.pivot_dir / "logs"

    # -- the whole run -----------------------------------------------------
    def run(self, opts: RunOptions) -> Summary:
        if opts.dry_run:
            return self._dry_run(opts)
        graph = self.repo.graph
        names = graph.select(list(opts.targets), opts.single_stage)
        self.repo.check_params(names)
        self.landing = Landing(self.repo)
        self._check_runnable(names, opts.force)  # before anything changes
        runsetup.before_run(self.repo, self.reporter, self.backups, self.logs_dir)
        self._fetch_missing(opts, names)
        self.summary = Summary()
        self.state = {n: "pending" for n in names}
        proven, rest = runsetup.proven(self.repo, names, opts.force or bool(self.landing.produced))
        runsetup.warn_unreadable_locks(self.repo, self.reporter, rest)
        self.frontier = Frontier(graph, rest)  # pending stages whose upstream has settled
        self.failed_upstream: dict[str, str] = {}  # a stage not run -> the failed stage that stopped it
        self.running: dict[Future[StageResult], tuple[Prepared, list[str]]] = {}
        self.stopping = False
        self.retry_alone: set[str] = set()
        self.keep_going = opts.keep_going
        # self.landing: remote stages' outputs, for deps the workspace lacks (--no-download).
        self.total = len(names)
        self.runs_on = opts.run_cache
        self.started = time.monotonic()
        self._prepared: dict[str, Prepared] = {}  # ready stages prepared for a batched lookup
        self._looked: set[str] = set()
        self._as_planned: set[str] = set()  # stages restored from up-front hits, or up to date
        self._fresh: dict[str, Decision] = {}  # the up-front plan's up-to-date stages
        self._committed = time.monotonic()
        try:
            self._skip_proven(proven)
            self._warm_up(rest, opts.force)  # the proven stages have their locks and need no worker
            self._look_up_front(opts)
            while True:
                with gc_paused(keep=True):  # thousands of stages decided here, kept to the end of the run
                    self._start_ready(opts.force)
                if not self.running:
                    self._record_runs()
                    self.repo.commit()
                    break
                for fut in self._wait():
                    self._finish(fut)
        except BaseException:
            self._abort()
            raise
        problem = None
        if self._executor is not None:
            executor, self._executor = self._executor, None
            try:
                executor.shutdown()  # a remote executor finishes its background uploads here
            except PivotError as exc:
                problem = exc
        for name in names:
            if self.state[name] == "pending":
                self.reporter.not_run(name, "stopped after a failure; use --keep-going to run independent stages")
                self.summary.not_run.append(name)
        self.reporter.summary(self.summary)
        if problem is not None:
            raise problem
        return self.summary

    def _skip_proven(self, names: list[str]) -> None:
        """Stages up to date by their proofs, upstream included (`runsetup.proven`): settled
        first, outside the frontier (which counts only the other stages' upstream)."""
        self.state.update(dict.fromkeys(names, "ok"))
        self._as_planned.update(names)
        self.summary.skipped.extend(names)
        for name in names:
            self.reporter.skipped(name, [], (), None, [])

    def _warm_up(self, names: list[str], force: bool) -> None:
        """The local workers start and import the pipeline now, on a first run (`first_run_modules`)."""
        modules = runsetup.first_run_modules(self.repo, names, force) if self._default_pool else None
        if modules is not None:
            self._start_executor()
            if isinstance(self._executor, PoolExecutor):
                self._executor.preload(modules, self.jobs)

    def _plan_with_remote(self, opts: RunOptions, names: list[str],
                          wanted: dict[str, NeededOutput] | None = None) -> tuple[list[Planned], fresh.Source | None]:
        """The plan, knowing which missing outputs the remote holds (one batched query, asked
        only when some locked output is in neither the workspace nor the cache). `wanted`: those
        outputs, when the caller has found them already."""
        src = self.source
        if wanted is None:
            wanted = fresh.candidates(self.repo, names) if src is not None else {}
        runs = self._runs(opts) if opts.dry_run else None
        if src is None or not wanted:
            return plan(self.repo, opts.targets, opts.single_stage, opts.force, runs=runs), None
        try:
            held = fresh.held(self._storage(src), self.repo, wanted, src.jobs(), ask=True)
        except PivotError as exc:  # unreachable, no credentials…: compute, as without a remote
            self.reporter.warning(f"{exc}; stages whose outputs are missing here run instead")
            return plan(self.repo, opts.targets, opts.single_stage, opts.force, runs=runs), None
        return plan(self.repo, opts.targets, opts.single_stage, opts.force, on_remote=held, runs=runs), src

    def _runs(self, opts: RunOptions) -> RunCache | None:
        return self.runs if opts.run_cache and not opts.force else None

    def _look_up_front(self, opts: RunOptions) -> None:
        """With a remote, every stale stage that can be decided before anything runs (waves:
        those after a hit too) is looked up in one batch per wave, and the objects of all hits
        come in one verified fetch; later, the stages that become ready together are looked up
        together (`_look_up_ready`). Without a remote, each stale stage is looked up locally
        when the run reaches it (one file)."""
        if self.source is None or self._runs(opts) is None:
            return
        self.runs.storage = self._opened  # the remote as _fetch_missing opened it, if it did
        planned = plan(self.repo, opts.targets, opts.single_stage, runs=self.runs)
        self._fresh = {p.name: p.decision for p in planned if not p.decision.run}
        self.hits = self.runs.fetch_objects({p.name: p.hit for p in planned if p.hit is not None
                                             and not (p.prepared is not None and p.prepared.damaged)})

    def _look_up_ready(self, force: bool) -> None:
        """The stale stages that are ready now (upstream done) and the up-front lookup could not
        decide, looked up on the remote in one batch; their preparation is kept for the run.
        Only the stages that became ready since the last lookup can be new candidates."""
        if force or not self.runs_on or self.runs.source is None:
            return
        asks: dict[str, Prepared] = {}
        for name in self.frontier.take_new():
            ups = self.repo.graph.upstream[name]
            if self.state[name] != "pending" or name in self._looked or name in self.hits or \
                    any(self.state[u] != "ok" for u in ups if u in self.state):
                continue
            self._looked.add(name)
            prep = self._prepared[name] = self.landing.prepare(name, force)
            if decide(prep.current, prep.lock).run and self.runs.local_hit(prep) is None and self.runs.can_ask(prep):
                asks[name] = prep
        if len(asks) > 1:
            self.hits.update(self.runs.fetch_objects(self.runs.remote_hits(asks)))

    def _from_run_cache(self, name: str, prep: Prepared) -> bool:
        """Restore a stale stage from a run record instead of running it; False: none usable."""
        hit = self.hits.pop(name, None)
        if hit is None or hit.record.key != key_of(prep):
            hit = self.runs.find(prep)
            hit = self.runs.fetch_objects({name: hit}).get(name) if hit is not None else None
        if hit is None:
            return False
        self._restore_hit(name, hit)
        return True

    def _restore_hit(self, name: str, hit: Hit) -> None:
        paths = self.runs.restore(name, hit)
        self._settle(name, "ok")
        self._as_planned.add(name)
        self.summary.restored.append(name)
        self.reporter.restored(name, hit.label, hit.where if hit.remote else None, paths)
        self._progress()

    def _settle_as_planned(self, name: str, ups: list[str]) -> bool:
        """A stage whose upstream all ended as the up-front plan said (restored from their
        records, or up to date) is settled as planned, without preparing it again: restored
        from its up-front hit (its key stands), or skipped as up to date. False: neither."""
        if not all(u in self._as_planned for u in ups):
            return False
        if name in self.hits:
            self._restore_hit(name, self.hits.pop(name))
            return True
        if name in self._fresh:
            self._skip(name, self._fresh.pop(name))
            return True
        return False

    def _storage(self, src: fresh.Source) -> Storage:
        if self._opened is None:
            self._opened = src.open()
        return self._opened

    def _fetch_missing(self, opts: RunOptions, names: list[str]) -> None:
        """Outputs of up-to-date stages that only the remote holds come into the cache in one
        fetch, so the stages are restored instead of run; what the remote lacks after all runs."""
        wanted = fresh.candidates(self.repo, names) if self.source is not None else {}
        if not wanted:
            return  # nothing a remote could spare us: no second planning pass
        planned, src = self._plan_with_remote(opts, names, wanted)
        records = [r for p in planned if not p.decision.run for r in p.decision.fetch]
        if src is None or not records:
            return
        stages = {r.path: p.name for p in planned for r in p.decision.fetch}
        try:
            result = fresh.fetch_records(self._storage(src), self.repo, records, stages, src.jobs())
        except PivotError as exc:  # what did arrive is verified and in the cache: it is restored
            self.reporter.warning(f"{exc}; stages whose outputs did not arrive run instead")
            self.from_remote = {r.path for r in records if self.repo.in_cache(r)}
            return
        for path in sorted(set(result.missing.values()) | set(result.corrupt.values())):
            self.reporter.note(f"{stages.get(path, '?')}: '{path}' is not on remote '{src.name}' after all; "
                               "the stage runs")
        self.from_remote = {r.path for r in records if self.repo.in_cache(r)}

    def _dry_run(self, opts: RunOptions) -> Summary:
        runsetup.remove_orphans(self.repo, self.reporter, dry_run=True)
        planned, src = self._plan_with_remote(opts, self.repo.graph.select(list(opts.targets), opts.single_stage))
        return runsetup.report_dry_run(self.reporter, planned, src.name if src is not None else None)

    def _progress(self) -> None:
        finished = len(self.summary.ran) + len(self.summary.skipped) + len(self.summary.failed) \
            + len(self.summary.restored)
        running = [prep.stage.name for prep, _b in self.running.values()]
        self.reporter.progress(finished, self.total, running, time.monotonic() - self.started)

    def _start_ready(self, force: bool) -> None:
        """Start (or skip) every stage whose upstream is done, in run order, while workers are
        free. Only the frontier is looked at: its stages are taken in order, and each stage
        settled here adds what it makes ready (further down the order) to it."""
        self._look_up_ready(force)
        frontier = self.frontier
        while (name := frontier.first()) is not None:
            if self.state[name] != "pending":
                frontier.pop()
                continue
            ups = [u for u in self.repo.graph.upstream[name] if u in self.state]
            bad = sorted(u for u in ups if self.state[u] in ("failed", "blocked"))
            if bad:
                frontier.pop()
                self._blocked(name, bad)
                continue
            if self.stopping:
                frontier.pop()  # stays pending, reported as not run
                continue
            exclusive_busy = any(self._alone(prep.stage.name) for prep, _b in self.running.values())
            if exclusive_busy or len(self.running) >= self.jobs:
                return
            if self._alone(name) and self.running:
                return  # wait for the running ones to finish; start nothing else meanwhile
            if self.budget is not None and not self.budget.fits(self.repo.graph.stages[name].limits):
                return  # wait for CPUs, memory or a GPU; the stages after it do not overtake it
            frontier.pop()
            self._start_one(name, ups, force)

    def _start_one(self, name: str, ups: list[str], force: bool) -> None:
        """A ready stage (upstream all ok): settled as planned, skipped, restored from a run
        record, or submitted."""
        if self._settle_as_planned(name, ups):
            return
        if not force and not self.landing.produced and name not in self._prepared and self.repo.proven(name):
            self._skip(name, UP_TO_DATE)  # as when last found up to date (pivot/uptodate.py)
            return
        prep = self._prepared.pop(name, None) or self.landing.prepare(name, force)
        decision = decide(prep.current, prep.lock)
        if not decision.run:
            self.repo.prove(prep)
            self._skip(name, decision)
            return
        for out, objs in prep.damaged.items():  # never restore them again, here or downstream
            self.reporter.note(f"{name}: {self.repo.evict_damaged(out, objs)}")
        if not force and self.runs_on and self._from_run_cache(name, prep):
            return
        self._start_executor()  # before saying "running": the cluster may be unreachable
        self.reporter.running(name, decision.reasons)
        self._submit(prep)
        self._progress()

    def _settle(self, name: str, state: str) -> None:
        """`name` ends the run ok, failed or blocked: the stages it held back may be ready."""
        self.state[name] = state
        self.frontier.settled(name, state == "ok")

    def _skip(self, name: str, decision: Decision) -> None:
        """An up-to-date stage: its missing outputs come back from the cache."""
        for rec in decision.restore:
            note = self.repo.restore(rec)
            if note:
                self.reporter.note(f"{name}: {note}")
        self._settle(name, "ok")
        self._as_planned.add(name)
        self.summary.skipped.append(name)
        restored = [r.path for r in decision.restore]
        pulled = [p for p in restored if p in self.from_remote]
        remote = self.source.name if pulled and self.source is not None else None
        self.reporter.skipped(name, restored, decision.reasons, remote, pulled)

    def _blocked(self, name: str, bad: list[str]) -> None:
        """`name` cannot run: an upstream stage failed, or was itself not run (for a failure
        further up, which is named: a stage that did not run never "failed")."""
        failed = [u for u in bad if self.state[u] == "failed"]
        if failed:
            self.failed_upstream[name] = failed[0]
            why = f"upstream stage '{failed[0]}' failed"
        else:
            root = self.failed_upstream[name] = self.failed_upstream.get(bad[0], bad[0])
            why = f"upstream stage '{bad[0]}' was not run, because '{root}' failed"
        self._settle(name, "blocked")
        self.reporter.not_run(name, why)
        self.summary.not_run.append(name)

    def _start_executor(self) -> None:
        if self._executor is None:
            self._executor = self._factory()
            slots = self._executor.capabilities.slots
            if self._auto_jobs and slots is not None:
                self.jobs = max(1, slots)
            if self._caps.workers == ():  # an adaptive cluster, say, with no workers yet
                self.reporter.warning("the cluster has no workers yet: stages' resources are not checked")
            self._check_runnable([n for n, st in self.state.items() if st == "pending"])

    def _unrunnable(self, name: str) -> str | None:
        return refusal(name, self.repo.graph.stages[name].limits, self.budget, self._caps.workers)

    def _check_runnable(self, names: list[str], force: bool | None = None) -> None:
        """Before anything runs (and on a cluster, once connected): a stage that must run and
        can run nowhere stops the run. One up to date now is checked again if it runs (`_submit`)."""
        self.force = self.force if force is None else force
        for name in names:
            why = self._unrunnable(name)
            prep = self.landing.prepare(name, self.force) if why is not None else None
            if why is not None and prep is not None and (self.force or decide(prep.current, prep.lock).run):
                raise ResourceError(why)

    @property
    def _caps(self) -> Capabilities:
        return self._executor.capabilities if self._executor is not None else LOCAL

    @property
    def _remote(self) -> bool:
        return self._caps.remote

    def _alone(self, name: str) -> bool:
        return self.repo.graph.stages[name].exclusive or name in self.retry_alone

    def _submit(self, prep: Prepared) -> None:
        name = prep.stage.name
        missing = [d for d, h in prep.dep_hashes.items() if h is None]
        if missing:
            self._failed(name, f"dep '{missing[0]}' is missing; create it or run the stage that produces it")
            return
        why = self._unrunnable(name)
        if why is not None:
            self._failed(name, why)
            return
        outs = prep.stage.outs
        backups: list[str] = []
        try:
            self.landing.start_incremental(prep)
            backups = self.backups.move_aside(name, outs)
            for o in outs:  # looked at before made: a mkdir takes its folder's lock even when it exists
                folder = (self.root / o.path).parent
                if not folder.is_dir():
                    folder.mkdir(parents=True, exist_ok=True)
            task = StageTask(
                name, prep.stage.func, prep.params, self.root,
                tuple(OutSpec(o.path, o.kind, o.cached) for o in outs),
                self.repo.cache.dir, self.repo.cache.link, self.logs_dir / stage_file(name, ".log"),
                limits=prep.stage.limits,
            )
            self._start_executor()
            if self._remote:
                task = self.landing.remote_task(task, prep, outs)
                if self._caps.batches and prep.stage.limits == DEFAULT:  # a chain shares one worker's time
                    task = replace(task, then=followers(self.repo, self.landing, self.state, name,
                                                        prep.current.forced, self.logs_dir))
            elif self.budget is not None:
                gpus = self.budget.take(name, prep.stage.limits)
                task = replace(task, env=(("CUDA_VISIBLE_DEVICES", ",".join(gpus)),) if gpus else ())
            assert self._executor is not None
            fut = self._executor.submit(task)
        except BaseException:
            self.backups.roll_back(name, outs, backups)
            if self.budget is not None:
                self.budget.release(name)
            raise
        self.state[name] = "running"
        self.running[fut] = (prep, backups)

    def _finish(self, fut: Future[StageResult]) -> None:
        # The stage stays in self.running, which Ctrl-C or an error rolls back (_abort), until it
        # is settled; settling (rolled back and marked failed, or locked and marked done) is not
        # interrupted halfway, so a lock never lacks its outputs nor outputs their lock.
        prep, backups = self.running[fut]
        name = prep.stage.name
        outs = prep.stage.outs
        if self.budget is not None:
            self.budget.release(name)
        try:
            result = fut.result()
        except Exception as exc:
            if self._remote and isinstance(exc, PivotError):
                raise
            from concurrent.futures.process import BrokenProcessPool  # loaded already by the pool

            if not self._remote and isinstance(exc, BrokenProcessPool):
                # a local worker died (killed, out of memory, os._exit); the cluster retries its own
                with atomic.interrupts_deferred():
                    del self.running[fut]
                    self._worker_died(name, outs, backups)
            else:  # storing the outputs failed on the worker (the stage's own errors are caught there)
                self._settle_failed(fut, outs, backups,
                                    str(exc) if isinstance(exc, PivotError) else f"{type(exc).__name__}: {exc}")
            return
        if result.refused:
            raise WorkerRefused(result.refused)
        if result.output:
            self.reporter.output(name, result.output)
        if not result.ok:
            self._settle_failed(fut, outs, backups, result.error or "failed", result.timed_out)
            return
        if not result.placed:
            self.landing.land(result, self._caps.downloads)
        problem = None
        if any(not rec.cached for rec in result.records):
            from pivot.metrics import bad_metric  # lazy: only for stages with metrics

            problem = bad_metric(self.root, name, result.records)
        if problem is not None:  # caught now, not at the next `pivot metrics show`
            self._settle_failed(fut, outs, backups, problem)
            return
        with atomic.interrupts_deferred():
            deps = [PathRecord(d, h.hash, h.is_dir) for d, h in prep.dep_hashes.items() if h is not None]
            fp = prep.fingerprint
            lock = StageLock(fp.digest, fp.manifest, prep.current.params, tuple(deps), result.records, fp.notes)
            self.repo.write_lock(name, lock)
            del self.running[fut]
            self._settle(name, "ok")
            self.summary.ran.append(name)
        self._attempted(name, result.rescheduled)
        self._unrecorded.append((prep, lock))  # only now: outputs cached, lock written (`_record_runs`)
        self.repo.state.put_files(list(result.memo))
        self.backups.drop(name, backups)
        self.reporter.done(name, result.duration, result.worker if self._remote else "", result.timings)
        self._progress()

    def _wait(self) -> set[Future[StageResult]]:
        """The running stages that are done, as soon as one is. The state database is committed
        before a wait longer than a moment, and at least every quarter second: an open write
        transaction would block `pivot status`, and a commit per stage costs as much as a lock."""
        self._record_runs()  # while the stages just started run
        pool = self._executor if isinstance(self._executor, PoolExecutor) else None  # answers read here
        done = pool.wait(list(self.running), 0.05) if pool else wait(list(self.running), 0.05, FIRST_COMPLETED).done
        if not done or time.monotonic() - self._committed > 0.25:
            self.repo.state.commit()
            self._committed = time.monotonic()
        if not done:
            done = pool.wait(list(self.running)) if pool else wait(list(self.running), None, FIRST_COMPLETED).done
        return done

    def _settle_failed(self, fut: Future[StageResult], outs: tuple[Out, ...], backups: list[str],
                       error: str, timed_out: bool = False) -> None:
        """A running stage failed: undo what it wrote and record the failure (or try it again,
        when it has retries left), not interrupted halfway."""
        name = self.running[fut][0].stage.name
        with atomic.interrupts_deferred():
            del self.running[fut]
            self.backups.roll_back(name, outs, backups)
            tried = self.attempts.get(name, 1)
            retries = self.repo.graph.stages[name].limits.retries
            if tried <= retries and not self.stopping:
                self.attempts[name] = tried + 1
                self.state[name] = "pending"
                self.frontier.again(name)
                last = (error.strip().splitlines() or ["failed"])[-1]
                self.reporter.note(f"{name}: attempt {tried} of {retries + 1} failed ({last}); trying again")
                return
            if timed_out:
                self.summary.timed_out.append(name)
            self._failed(name, error)
            self._attempted(name)

    def _attempted(self, name: str, rescheduled: bool = False) -> None:
        """The summary says how many attempts a stage took, and whether a lost worker made it run again."""
        if self.attempts.get(name, 1) > 1:
            self.summary.attempts[name] = self.attempts[name]
        if rescheduled:
            self.summary.rescheduled.append(name)
            self.reporter.note(f"{name}: rescheduled after a worker was lost")

    def _worker_died(self, name: str, outs: tuple[Out, ...], backups: list[str]) -> None:
        """When a worker dies, the pool fails every stage it was running. Each is rolled back and
        retried alone in a fresh pool; only a stage whose worker dies while it runs alone fails."""
        if self._executor is not None:
            self._executor.shutdown(kill=True)
            self._executor = None
        self.backups.roll_back(name, outs, backups)
        if name in self.retry_alone:
            self._failed(name, "its worker process died (killed by a signal, out of memory, or os._exit)")
            return
        self.retry_alone.add(name)
        self.state[name] = "pending"
        self.frontier.again(name)
        self.reporter.note(f"{name}: a worker process died while it ran; retrying it on its own")

    def _failed(self, name: str, error: str) -> None:
        self._settle(name, "failed")
        self.summary.failed.append(name)
        self.reporter.failed(name, error)
        if not self.keep_going:
            self.stopping = True
        self._progress()

    def _record_runs(self) -> None:
        """Write the run records of the stages settled since the last wait: after the stages they
        made ready are submitted, off a chain's path from one stage to the next."""
        while self._unrecorded:
            self.runs.save(*self._unrecorded.pop(0))

    def _abort(self) -> None:
        """Ctrl-C or an unexpected error: stop the workers, undo what the running stages did."""
        if self._executor is not None:
            self._executor.shutdown(kill=True)
            self._executor = None
        with atomic.interrupts_deferred():  # a second Ctrl-C must not stop a roll back halfway
            for prep, backups in self.running.values():
                name = prep.stage.name
                self.backups.roll_back(name, prep.stage.outs, backups)
            self.running.clear()
        clear_leftovers(self.repo.cache.dir, self.repo.project.stages_dir, self.logs_dir)
        with suppress(OSError, PivotError):  # the settled stages' records: a cache, and the run stops anyway
            self._record_runs()
