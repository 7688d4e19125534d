"""pivot run"""

from __future__ import annotations

import click

from pivot.cli._common import open_repo, stages_argument


@click.command("run")
@stages_argument
@click.option("-f", "--force", is_flag=True, help="Run the selected stages even if they are up to date.")
@click.option("-n", "--dry-run", is_flag=True, help="Show what would run, and why; change nothing.")
@click.option("--explain", is_flag=True, help="Say why each stage runs or is skipped.")
@click.option("-s", "--single-stage", is_flag=True, help="Run only the named stages, not what they need.")
@click.option("-k", "--keep-going", is_flag=True, help="After a failure, keep running stages that do not depend on it.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Stages to run at once (default: the CPUs available).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON event per line.")
def command(stages: tuple[str, ...], force: bool, dry_run: bool, explain: bool, single_stage: bool,
            keep_going: bool, jobs: int | None, as_json: bool) -> None:
    """Run STAGES (default: all) and the stages they need, skipping what is up to date."""
    from pivot.errors import StageFailed
    from pivot.executor import available_cpus
    from pivot.reporter import ConsoleReporter, JsonReporter
    from pivot.run import RunOptions, Runner
    from pivot.runlock import ProjectLock

    reporter = JsonReporter() if as_json else ConsoleReporter(explain=explain or dry_run)
    opts = RunOptions(stages, force, dry_run, single_stage, keep_going)
    with open_repo() as repo, ProjectLock(repo.project.pivot_dir, "run"):
        summary = Runner(repo, reporter, jobs=jobs or available_cpus()).run(opts)
    if summary.failed:
        raise StageFailed(f"{len(summary.failed)} stage(s) failed: {', '.join(summary.failed)}")
