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
    from pivot.ops.gc import collect_garbage
    from pivot.ops.transfer import human

    done = collect_garbage(all_branches, all_commits, dry_run, remote_name, jobs, min_age)
    result = done.result
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {result.removed} object(s) ({human(result.bytes)}) from {done.where}; kept {result.kept}")
