"""pivot run: run what is stale, locally or on a Dask cluster, and report as it goes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pivot.errors import FlagMisuse
from pivot.workspace import Workspace

if TYPE_CHECKING:
    from pivot.executor import Executor
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


def run_pipeline(request: RunRequest, reporter: Reporter) -> Summary:
    """Run the selected stages (and what they need) while holding the project; the summary says
    what ran, was skipped, failed or did not run."""
    from pivot.run import RunOptions  # lazy: loads the pipeline machinery

    opts = RunOptions(request.stages, request.force, request.dry_run, request.single_stage, request.keep_going)
    with Workspace.find() as ws:
        repo = ws.repo  # the pipeline loads (and may be refused) before the project is held
        with ws.lock("run"):
            return _run(repo, reporter, request, opts)


def _run(repo: Repo, reporter: Reporter, request: RunRequest, opts: RunOptions) -> Summary:
    from pivot.executor import available_cpus  # lazy: start-up
    from pivot.run import Runner  # lazy: loads the pipeline machinery

    factory = executor_factory(repo, request)
    if factory is None:
        runner = Runner(repo, reporter, jobs=request.jobs or available_cpus())
    else:
        runner = Runner(repo, reporter, jobs=request.jobs, executor_factory=factory)
    return runner.run(opts)


def executor_factory(repo: Repo, request: RunRequest) -> Callable[[], Executor] | None:
    """None for the local pool; for dask, a factory that connects when the first stage must run
    (a run where everything is up to date needs no cluster). Everything that can be checked
    without the cluster is checked now, before anything changes."""
    from pivot.executor import check_kind, executor_factory  # lazy: start-up

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
    # The command line over the configuration, key by key.
    options: dict[str, Any] = {**config, "download": not request.no_download}
    options.update({k: v for k, v in (("scheduler", request.scheduler), ("remote", request.remote)) if v})
    return executor_factory(kind, options, 1, root=repo.root, cache=repo.cache, project=repo.project)
