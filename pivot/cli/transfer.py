"""pivot push / fetch / pull"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from pivot.cli.common import echo_json, stages_argument

if TYPE_CHECKING:
    from pivot.ops.transfer import Moved, Pulled, Selection


def _options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        stages_argument,
        click.option("-r", "--remote", "remote_name", metavar="NAME", help="The remote (default: the default remote)."),
        click.option("-j", "--jobs", type=click.IntRange(1, 512), default=None,
                     help="Transfers at a time (default: 8 per CPU, at most 64; 4 to 8 for a local folder)."),
        click.option("--all-branches", is_flag=True, help="Also the outputs that every local branch's locks need."),
        click.option("--all-commits", is_flag=True, help="Also the outputs of every commit (branches, tags, remotes)."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print the totals (objects, bytes, seconds, already present, failed) as one JSON object."),
    ]):
        func = option(func)
    return func


def _selection(stages: tuple[str, ...], remote_name: str | None, jobs: int | None, all_branches: bool,
               all_commits: bool) -> Selection:
    from pivot.ops.transfer import Selection

    return Selection(stages, remote_name, jobs, all_branches, all_commits)


def _report_problems(moved: Moved, where: str, fix: str) -> None:
    from pivot.errors import RemoteError
    from pivot.ops.transfer import summarize

    result = moved.result
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    problems = []
    if result.corrupt:
        problems.append(f"{len(result.corrupt)} object(s) were refused because their bytes do not match their "
                        f"hash ({summarize(result.corrupt.values())})")
    if result.missing:
        problems.append(f"{len(result.missing)} object(s) are missing {where} ({summarize(result.missing.values())})")
    if problems:
        raise RemoteError("; ".join(problems) + f"; {fix}")


@click.command("push")
@_options
@click.option("--run-cache/--no-run-cache", default=True, show_default=True,
              help="Then upload the run records of the outputs pushed, so other clones restore those runs.")
def push_command(stages: tuple[str, ...], remote_name: str | None, jobs: int | None, all_branches: bool,
                 all_commits: bool, as_json: bool, run_cache: bool) -> None:
    """Upload the cache objects the lock files need and the remote lacks."""
    from pivot.ops.transfer import human, push

    moved = push(_selection(stages, remote_name, jobs, all_branches, all_commits), run_cache)
    result = moved.result
    if as_json:
        echo_json({**result.totals(), "run_records": moved.run_records})
    elif result.done:
        click.echo(f"pushed {len(result.done)} object(s) ({human(result.bytes)}) to '{moved.remote}'; "
                   f"{result.present} already there")
    else:
        click.echo(f"'{moved.remote}' already has all {result.present} object(s)")
    if moved.run_records and not as_json:
        click.echo(f"uploaded {moved.run_records} run record(s) to '{moved.remote}'")
    _report_problems(moved, "from the local cache, so they were not pushed",
                     "run 'pivot run' to rebuild them (or 'pivot pull' from another remote)")


def _echo_fetched(moved: Moved) -> None:
    from pivot.ops.transfer import human

    result = moved.result
    if result.done:
        click.echo(f"fetched {len(result.done)} object(s) ({human(result.bytes)}) from '{moved.remote}'; "
                   f"{result.present} already in the cache")
    else:
        click.echo(f"the cache already has all {result.present} object(s) it needs"
                   if not result.missing and not result.corrupt else "nothing fetched")


@click.command("fetch")
@_options
def fetch_command(stages: tuple[str, ...], remote_name: str | None, jobs: int | None, all_branches: bool,
                  all_commits: bool, as_json: bool) -> None:
    """Download the cache objects the lock files need and the cache lacks (verified)."""
    from pivot.ops.transfer import fetch

    moved = fetch(_selection(stages, remote_name, jobs, all_branches, all_commits))
    if as_json:
        echo_json(moved.result.totals())
    else:
        _echo_fetched(moved)
    _report_problems(moved, "on the remote", "push them from a clone that has them ('pivot push')")


@click.command("pull")
@_options
@click.option("--force", is_flag=True, help="Also overwrite outputs whose current content is not in the cache.")
def pull_command(stages: tuple[str, ...], remote_name: str | None, jobs: int | None, all_branches: bool,
                 all_commits: bool, as_json: bool, force: bool) -> None:
    """fetch, then checkout: bring the outputs of the lock files into the workspace."""
    from pivot.errors import CacheError
    from pivot.ops.transfer import pull, pull_totals

    pulled = pull(_selection(stages, remote_name, jobs, all_branches, all_commits), force)
    for text in pulled.evicted:  # damaged cache objects were taken out: good copies fetched, then placed
        click.echo(f"warning: {text}", err=True)
    done = pulled.checkout
    if as_json:
        echo_json(pull_totals(pulled))
    else:
        for moved in pulled.fetches:
            _echo_fetched(moved)
        _echo_restored(pulled)
    for path, why in done.kept:
        click.echo(f"kept {path}: {why}", err=True)
    _report_problems(pulled.fetches[-1], "on the remote", "push them from a clone that has them ('pivot push')")
    if done.kept:
        raise CacheError("some outputs were not overwritten; see above (use --force to overwrite)")


def _echo_restored(pulled: Pulled) -> None:
    done = pulled.checkout
    click.echo(f"restored {len(done.restored)} output(s)" if done.restored
               else "all outputs already match their lock files" if not done.missing else "no output restored")
