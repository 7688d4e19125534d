"""pivot gc"""

from __future__ import annotations

import sys

import click


@click.command("gc")
@click.option("--workspace", "workspace_only", is_flag=True,
              help="Keep only what the workspace's lock files need (older commits' outputs go).")
@click.option("--all-branches", is_flag=True,
              help="Keep what the workspace and the last commit of every local branch need.")
@click.option("--all-commits", is_flag=True,
              help="Keep what any commit needs, remote-tracking branches' too.")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("-y", "--yes", is_flag=True, help="Remove without asking.")
@click.option("-r", "--remote", "remote_name", metavar="NAME",
              help="Clean remote NAME instead of the local cache.")
@click.option("-j", "--jobs", type=click.IntRange(1, 512), default=None, help="Requests at a time (remote only).")
@click.option("--min-age", "min_age", type=click.IntRange(0), default=60, show_default=True, metavar="MINUTES",
              help="Remote only: keep unreferenced objects written less than this long ago "
                   "(a push in progress may need them).")
def command(workspace_only: bool, all_branches: bool, all_commits: bool, dry_run: bool, yes: bool,
            remote_name: str | None, jobs: int | None, min_age: int) -> None:
    """Remove cache objects that no kept lock file refers to.

    Kept by default: what the workspace's lock files need and what any commit of a local branch
    or tag needs. Narrower: --workspace (the workspace only), --all-branches (the workspace and
    each local branch's last commit). Wider: --all-commits (remote-tracking branches too).
    Anything else is removed, from the local cache or with --remote from that remote, after a
    [y/N] question on a terminal; --yes skips it, and without a terminal --yes is required."""
    from pivot.ops.gc import Keep, collect_garbage
    from pivot.ops.transfer import human

    if workspace_only and (all_branches or all_commits):
        raise click.UsageError("--workspace keeps only the workspace's lock files: "
                               "do not combine it with --all-branches or --all-commits")
    keep = (Keep.WORKSPACE if workspace_only else Keep.ALL_COMMITS if all_commits
            else Keep.BRANCH_TIPS if all_branches else Keep.HISTORY)

    def confirm(where: str, count: int, size: int) -> bool:
        if yes:
            return True
        from pivot.errors import NeedsConfirmation  # lazy: only when something would be removed

        if not sys.stdin.isatty():
            raise NeedsConfirmation(f"gc would remove {count} object(s) ({human(size)}) from {where} and "
                                    "there is no terminal to ask: pass --yes to remove them "
                                    "(or --dry-run to see what would go); nothing was removed")
        return click.confirm(f"remove {count} object(s) ({human(size)}) from {where}?", default=False)

    done = collect_garbage(keep, dry_run, remote_name, jobs, min_age, confirm)
    result = done.result
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if result.declined:
        click.echo(f"nothing removed from {done.where}")
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {result.removed} object(s) ({human(result.bytes)}) from {done.where}; kept {result.kept}")
