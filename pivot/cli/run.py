"""pivot run"""

from __future__ import annotations

import click

from pivot.cli.common import stages_argument


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
@click.option("--no-pull", is_flag=True,
              help="Run stages whose outputs are missing here but on the default remote, instead of "
                   "fetching them.")
@click.option("-S", "--set", "set_params", multiple=True, metavar="STAGE.FIELD=VALUE",
              help="Set a parameter for this run: checked by the stage's params model, written to "
                   "params.yaml (comments kept), then the run proceeds. Repeatable.")
@click.option("--no-run-cache", is_flag=True,
              help="Run stale stages even when a run record (local or on the default remote) would restore them.")
@click.option("--watch", is_flag=True,
              help="After the run, watch the project and run again what each saved change makes stale "
                   "(Ctrl-C stops).")
def command(stages: tuple[str, ...], force: bool, dry_run: bool, explain: bool, single_stage: bool,
            keep_going: bool, jobs: int | None, as_json: bool, executor: str | None, scheduler: str | None,
            remote: str | None, no_download: bool, no_pull: bool, no_run_cache: bool,
            set_params: tuple[str, ...], watch: bool) -> None:
    """Run STAGES (default: all) and the stages they need, skipping what is up to date."""
    from pivot.errors import FlagMisuse, StageFailed
    from pivot.ops.run import RunRequest, run_pipeline
    from pivot.reporter import ConsoleReporter, JsonReporter

    reporter = JsonReporter() if as_json else ConsoleReporter(explain=explain or dry_run)
    request = RunRequest(stages, force, dry_run, single_stage, keep_going, jobs, executor, scheduler, remote,
                         no_download, no_pull, no_run_cache, set_params=set_params)
    try:
        if watch:
            from pivot.ops.watch import watch_pipeline  # lazy: watch mode only

            watch_pipeline(request, reporter)  # ends with Ctrl-C only
        summary = run_pipeline(request, reporter)
    except FlagMisuse as exc:
        raise click.UsageError(str(exc)) from None
    if summary.failed:
        raise StageFailed(f"{len(summary.failed)} stage(s) failed: {', '.join(summary.failed)}")
