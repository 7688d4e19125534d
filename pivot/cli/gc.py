"""pivot gc"""

from __future__ import annotations

import click


@click.command("gc")
@click.option("--all-branches", is_flag=True, help="Keep what every local branch's lock files need.")
@click.option("--all-commits", is_flag=True, help="Keep what every commit's lock files need.")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("-r", "--remote", "remote_name", metavar="NAME",
              help="Clean remote NAME instead of the local cache.")
@click.option("-j", "--jobs", type=click.IntRange(1, 512), default=None, help="Requests at a time (remote only).")
@click.option("--min-age", "min_age", type=click.IntRange(0), default=60, show_default=True, metavar="MINUTES",
              help="Remote only: keep unreferenced objects written less than this long ago "
                   "(a push in progress may need them).")
def command(all_branches: bool, all_commits: bool, dry_run: bool, remote_name: str | None, jobs: int | None,
            min_age: int) -> None:
    """Remove cache objects that no kept lock file refers to.

    Kept: the workspace's lock files, plus every local branch's (--all-branches) or every
    commit's (--all-commits). Anything else is removed, from the local cache or with --remote
    from that remote."""
    from pivot.cache import Cache
    from pivot.project import load_project
    from pivot.remote import default_jobs, gc_local, gc_remote, human, needed_outputs, open_storage
    from pivot.remote_config import resolve
    from pivot.runlock import ProjectLock

    project = load_project()
    cache = Cache(project.cache_dir, project.config.link)
    with ProjectLock(project.pivot_dir, "gc"):
        outputs = needed_outputs(project, (), all_branches, all_commits)
        if remote_name:
            spec = resolve(project.config, remote_name)
            jobs = jobs or default_jobs(spec.url)
            result = gc_remote(open_storage(spec, project.root, jobs), cache, outputs, jobs, dry_run,
                               min_age=min_age * 60.0)
            where = f"remote '{spec.name}'"
        else:
            result = gc_local(cache, outputs, dry_run)
            where = "the cache"
            if not dry_run:
                from pivot.lock import prune_memo
                from pivot.state import State

                state = State(project.state_path)
                try:
                    prune_memo(project.stages_dir, state)
                    state.drop_missing(project.root)
                finally:
                    state.close()
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {result.removed} object(s) ({human(result.bytes)}) from {where}; kept {result.kept}")
