"""pivot get"""

from __future__ import annotations

import click

from pivot.cli.common import echo_json, json_option


@click.command("get")
@click.argument("path")
@click.option("--rev", default="HEAD", show_default=True, metavar="REV",
              help="The git revision whose lock files and tracked records say what PATH held "
                   "(a branch, tag, commit, HEAD~2, …).")
@click.option("-o", "--out", "dest", metavar="DEST",
              help="Where to write (default: PATH's last part, in the current folder).")
@click.option("-r", "--remote", "remote_name", metavar="NAME",
              help="The remote for what the local cache lacks (default: the default remote).")
@click.option("--force", is_flag=True, help="Replace DEST if it exists.")
@click.option("-j", "--jobs", type=click.IntRange(1, 512), default=None, help="Downloads at a time.")
@json_option
def command(path: str, rev: str, dest: str | None, remote_name: str | None, force: bool, jobs: int | None,
            as_json: bool) -> None:
    """Write a stage output or tracked path (a file, a folder, or a file or folder inside a
    directory output) as recorded at git revision REV to DEST, from the local cache or the remote.

    The workspace, the lock files and git are left as they are."""
    from pivot.ops.get import GetRequest, get
    from pivot.ops.transfer import human

    got = get(GetRequest(path, rev, dest, remote_name, force, jobs))
    if as_json:
        echo_json({"path": got.path, "rev": got.rev, "commit": got.commit, "owner": got.owner, "dest": got.dest,
                   "dir": got.is_dir, "files": got.files, "bytes": got.bytes, "remote": got.remote,
                   "fetched": got.fetched, "fetched_bytes": got.fetched_bytes})
        return
    what = f"{got.files} file(s), {human(got.bytes)}" if got.is_dir else human(got.bytes)
    source = ("from git" if got.from_git else
              f"fetched {got.fetched} object(s) ({human(got.fetched_bytes)}) from remote '{got.remote}'"
              if got.remote else "from the local cache")
    click.echo(f"wrote {got.dest}: {got.path} at {got.rev} ({got.commit[:10]}, {got.owner}; {what}) {source}")
