"""pivot run"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from pivot.cli.common import open_repo, stages_argument

if TYPE_CHECKING:
    from pivot.executor import Executor
    from pivot.repo import Repo


@click.command("run")
@stages_argument
@click.option("-f", "--force", is_flag=True, help="Run the selected stages even if they are up to date.")
@click.option("-n", "--dry-run", is_flag=True, help="Show what would run, and why; change nothing.")
@click.option("--explain", is_flag=True, help="Say why each stage runs or is skipped.")
@click.option("-s", "--single-stage", is_flag=True, help="Run only the named stages, not what they need.")
@click.option("-k", "--keep-going", is_flag=True, help="After a failure, keep running stages that do not depend on it.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Stages to run at once (default: the CPUs available; with dask, 1.5x the workers).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON event per line.")
@click.option("--executor", type=click.Choice(["local", "dask"]), default=None,
              help="Where stages run: the local pool (default) or a Dask cluster (executor.kind in "
                   ".pivot/config.yaml).")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="The Dask scheduler, e.g. tcp://HOST:8786 (implies --executor dask).")
@click.option("-r", "--remote", metavar="NAME", default=None,
              help="With dask: the remote the workers share (default: the default remote).")
@click.option("--no-download", is_flag=True,
              help="With dask: leave outputs on the remote instead of bringing them into the workspace.")
def command(stages: tuple[str, ...], force: bool, dry_run: bool, explain: bool, single_stage: bool,
            keep_going: bool, jobs: int | None, as_json: bool, executor: str | None, scheduler: str | None,
            remote: str | None, no_download: bool) -> None:
    """Run STAGES (default: all) and the stages they need, skipping what is up to date."""
    from pivot.errors import StageFailed
    from pivot.executor import available_cpus
    from pivot.reporter import ConsoleReporter, JsonReporter
    from pivot.run import Runner, RunOptions
    from pivot.runlock import ProjectLock

    reporter = JsonReporter() if as_json else ConsoleReporter(explain=explain or dry_run)
    opts = RunOptions(stages, force, dry_run, single_stage, keep_going)
    with open_repo() as repo, ProjectLock(repo.project.pivot_dir, "run"):
        factory = _executor_factory(repo, executor, scheduler, remote, no_download, dry_run)
        if factory is None:
            runner = Runner(repo, reporter, jobs=jobs or available_cpus())
        else:
            runner = Runner(repo, reporter, jobs=jobs, executor_factory=factory)
        summary = runner.run(opts)
    if summary.failed:
        raise StageFailed(f"{len(summary.failed)} stage(s) failed: {', '.join(summary.failed)}")


def _executor_factory(repo: Repo, executor: str | None, scheduler: str | None, remote: str | None,
                      no_download: bool, dry_run: bool) -> Callable[[], Executor] | None:
    """None for the local pool; for dask, a factory that connects when the first stage must run
    (a run where everything is up to date needs no cluster). Everything that can be checked
    without the cluster is checked now, before anything changes."""
    from pivot.executor import check_kind, executor_factory

    config = dict(repo.project.config.executor) if executor != "local" else {}
    kind = check_kind(executor or ("dask" if scheduler else None) or config.get("kind") or "local")
    if kind == "local":
        for flag, given in (("--scheduler", scheduler), ("--remote", remote), ("--no-download", no_download)):
            if given:
                raise click.UsageError(f"{flag} applies to --executor dask only")
        return None
    if dry_run:
        return None
    # The command line over the configuration, key by key.
    options = {**config, "download": not no_download}
    options.update({k: v for k, v in (("scheduler", scheduler), ("remote", remote)) if v})
    return executor_factory(kind, options, 1, root=repo.root, cache=repo.cache, project=repo.project)
