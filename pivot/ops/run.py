"""pivot run: run what is stale, locally or on a Dask cluster, and report as it goes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pivot.errors import FlagMisuse
from pivot.workspace import Workspace

if TYPE_CHECKING:
    from pivot.executor import Executor
    from pivot.fresh import Source
    from pivot.repo import Repo
    from pivot.reporter import Reporter, Summary
    from pivot.run import RunOptions


@dataclass(frozen=True)
class RunRequest:
    stages: tuple[str, ...] = ()
    force: bool = False
    dry_run: bool = False
    single_stage: bool = False
    keep_going: bool = False
    jobs: int | None = None  # None: the CPUs available (local), 1.5x the workers (dask)
    executor: str | None = None  # "local", "dask", or None: from --scheduler, then executor.kind
    scheduler: str | None = None
    remote: str | None = None
    no_download: bool = False
    no_pull: bool = False  # compute outputs a fresh clone lacks instead of fetching them from the default remote
    no_run_cache: bool = False  # run stale stages even when a run record would restore them
    set_params: tuple[str, ...] = ()  # -S STAGE.FIELD=VALUE: written to params.yaml before the run


def run_pipeline(request: RunRequest, reporter: Reporter) -> Summary:
    """Run the selected stages (and what they need) while holding the project; the summary says
    what ran, was skipped, failed or did not run."""
    from pivot.run import RunOptions  # lazy: loads the pipeline machinery

    opts = RunOptions(request.stages, request.force, request.dry_run, request.single_stage, request.keep_going,
                      run_cache=not request.no_run_cache)
    with Workspace.find() as ws:
        repo = ws.repo  # the pipeline loads (and may be refused) before the project is held
        source = None if request.no_pull else remote_source(ws, None, ask=True)
        with ws.lock("run"):
            if request.set_params:
                set_params(repo, reporter, request.set_params, request.dry_run)
            return _run(repo, reporter, request, opts, source)


def set_params(repo: Repo, reporter: Reporter, specs: tuple[str, ...], dry_run: bool) -> None:
    """Apply `run -S` settings: check them all, write params.yaml (not in a dry run), and plan
    with the new values. A bad setting raises before anything is written."""
    from pivot import overrides  # lazy: ruamel and the params machinery only with -S
    from pivot import params as params_mod  # lazy: see above

    settings = overrides.parse(specs, repo.stages)
    current = params_mod.load_overrides(repo.root)  # read again: the project is held now
    new = overrides.applied(current, settings, repo.stages)
    shown = ", ".join(s.shown for s in settings)
    if dry_run:
        reporter.note(f"dry run: planned with {shown}; params.yaml left unchanged")
    elif overrides.write(repo.root, settings, new):
        reporter.note(f"params.yaml: set {shown}")
    repo.use_overrides(new)


def remote_source(ws: Workspace, name: str | None, ask: bool, required: bool = False) -> Source | None:
    """Remote `name` (None: the default one; None when none is configured, unless `required`),
    opened on first use."""
    from pivot.errors import RemoteError
    from pivot.fresh import Source  # lazy: start-up

    try:
        spec = ws.remote(name)
    except RemoteError:
        if name is not None or required:
            raise
        return None

    def jobs() -> int:
        from pivot.remote import default_jobs  # lazy: the remote code only when outputs are missing

        return default_jobs(spec.url)

    return Source(spec.name, lambda: ws.storage(spec, jobs()), jobs, ask)


def _run(repo: Repo, reporter: Reporter, request: RunRequest, opts: RunOptions, source: Source | None) -> Summary:
    from pivot.executor import available_cpus  # lazy: start-up
    from pivot.run import Runner  # lazy: loads the pipeline machinery

    factory = executor_factory(repo, request)
    if factory is None:
        runner = Runner(repo, reporter, jobs=request.jobs or available_cpus(), source=source)
    else:
        runner = Runner(repo, reporter, jobs=request.jobs, executor_factory=factory, source=source)
    return runner.run(opts)


def executor_factory(repo: Repo, request: RunRequest) -> Callable[[], Executor] | None:
    """None for the local pool; for dask, a factory that connects when the first stage must run
    (a run where everything is up to date needs no cluster). Everything that can be checked
    without the cluster is checked now, before anything changes."""
    from pivot.executor import check_kind  # lazy: start-up (executor/base.py, which a run loads anyway)

    config = dict(repo.project.config.executor) if request.executor != "local" else {}
    kind = check_kind(request.executor or ("dask" if request.scheduler else None) or config.get("kind") or "local")
    if kind == "local":
        for flag, given in (("--scheduler", request.scheduler), ("--remote", request.remote),
                            ("--no-download", request.no_download)):
            if given:
                raise FlagMisuse(f"{flag} applies to --executor dask only")
        return None
    if request.dry_run:
        return None
    from pivot.executor import executor_factory  # lazy: the dask settings only for dask

    # The command line over the configuration, key by key.
    options: dict[str, Any] = {**config, "download": not request.no_download}
    options.update({k: v for k, v in (("scheduler", request.scheduler), ("remote", request.remote)) if v})
    if request.scheduler:  # a running scheduler named on the command line: no cluster to start
        options.pop("cluster", None)
    return executor_factory(kind, options, 1, root=repo.root, cache=repo.cache, project=repo.project)
