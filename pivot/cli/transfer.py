"""pivot push / fetch / pull"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pivot.cli.common import stages_argument


def _options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        stages_argument,
        click.option("-r", "--remote", "remote_name", metavar="NAME", help="The remote (default: the default remote)."),
        click.option("-j", "--jobs", type=click.IntRange(1, 512), default=None,
                     help="Transfers at a time (default: 8 per CPU, at most 64; 4 to 8 for a local folder)."),
        click.option("--all-branches", is_flag=True, help="Also the outputs that every local branch's locks need."),
        click.option("--all-commits", is_flag=True, help="Also the outputs of every commit (branches, tags, remotes)."),
    ]):
        func = option(func)
    return func


def _open(remote_name: str | None, jobs: int | None) -> tuple[Any, Any, Any, int]:
    from pivot.cache import Cache
    from pivot.project import load_project
    from pivot.remote import default_jobs, open_storage
    from pivot.remote_config import resolve

    project = load_project()
    spec = resolve(project.config, remote_name)
    jobs = jobs or default_jobs(spec.url)
    return project, open_storage(spec, project.root, jobs), Cache(project.cache_dir, project.config.link), jobs


def _report_problems(result: Any, where: str, fix: str) -> None:
    from pivot.errors import RemoteError
    from pivot.remote import summarize

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
def push_command(stages: tuple[str, ...], remote_name: str | None, jobs: int | None, all_branches: bool,
                 all_commits: bool) -> None:
    """Upload the cache objects the lock files need and the remote lacks."""
    from pivot.remote import human, needed_outputs, push

    project, storage, cache, jobs = _open(remote_name, jobs)
    outputs = needed_outputs(project, stages, all_branches, all_commits)
    result = push(storage, cache, outputs, jobs)
    if result.done:
        click.echo(f"pushed {len(result.done)} object(s) ({human(result.bytes)}) to '{storage.name}'; "
                   f"{result.present} already there")
    else:
        click.echo(f"'{storage.name}' already has all {result.present} object(s)")
    _report_problems(result, "from the local cache, so they were not pushed",
                     "run 'pivot run' to rebuild them (or 'pivot pull' from another remote)")


def _fetch(stages: tuple[str, ...], remote_name: str | None, jobs: int | None, all_branches: bool,
           all_commits: bool) -> Any:
    from pivot.remote import fetch, human, needed_outputs
    from pivot.runlock import ProjectLock

    project, storage, cache, jobs = _open(remote_name, jobs)
    outputs = needed_outputs(project, stages, all_branches, all_commits)
    with ProjectLock(project.pivot_dir, "fetch"):
        result = fetch(storage, cache, outputs, jobs)
    if result.done:
        click.echo(f"fetched {len(result.done)} object(s) ({human(result.bytes)}) from '{storage.name}'; "
                   f"{result.present} already in the cache")
    else:
        click.echo(f"the cache already has all {result.present} object(s) it needs"
                   if not result.missing and not result.corrupt else "nothing fetched")
    return result


@click.command("fetch")
@_options
def fetch_command(stages: tuple[str, ...], remote_name: str | None, jobs: int | None, all_branches: bool,
                  all_commits: bool) -> None:
    """Download the cache objects the lock files need and the cache lacks (verified)."""
    result = _fetch(stages, remote_name, jobs, all_branches, all_commits)
    _report_problems(result, "on the remote", "push them from a clone that has them ('pivot push')")


@click.command("pull")
@_options
@click.option("--force", is_flag=True, help="Also overwrite outputs whose current content is not in the cache.")
def pull_command(stages: tuple[str, ...], remote_name: str | None, jobs: int | None, all_branches: bool,
                 all_commits: bool, force: bool) -> None:
    """fetch, then checkout: bring the outputs of the lock files into the workspace."""
    from pivot.checkout import checkout
    from pivot.cli.common import open_repo
    from pivot.errors import CacheError
    from pivot.runlock import ProjectLock

    result = _fetch(stages, remote_name, jobs, all_branches, all_commits)
    with open_repo() as repo, ProjectLock(repo.project.pivot_dir, "pull"):
        done = checkout(repo, stages, force)
    if done.warnings:  # damaged cache objects were taken out: fetch good copies, then place them
        for text in done.warnings:
            click.echo(f"warning: {text}", err=True)
        result = _fetch(stages, remote_name, jobs, all_branches, all_commits)
        with open_repo() as repo, ProjectLock(repo.project.pivot_dir, "pull"):
            done = checkout(repo, stages, force)
    click.echo(f"restored {len(done.restored)} output(s)" if done.restored
               else "all outputs already match their lock files" if not done.missing else "no output restored")
    for path, why in done.kept:
        click.echo(f"kept {path}: {why}", err=True)
    _report_problems(result, "on the remote", "push them from a clone that has them ('pivot push')")
    if done.kept:
        raise CacheError("some outputs were not overwritten; see above (use --force to overwrite)")
