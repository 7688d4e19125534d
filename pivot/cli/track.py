"""pivot track, pivot untrack"""

from __future__ import annotations

import click

from pivot.cli.common import echo_json, json_option

_CHANGE = {"added": "tracked", "updated": "recorded a new version of", "unchanged": "unchanged:"}


@click.command("track")
@click.argument("paths", nargs=-1, required=True)
@json_option
def command(paths: tuple[str, ...], as_json: bool) -> None:
    """Store PATHS (files or folders) in the cache and record them in .pivot/tracked/ (commit that
    folder); the paths are added to .gitignore. Run again after a change to record the new version."""
    from pivot.ops.track import track

    results = track(paths)
    if as_json:
        echo_json([{"path": r.tracked.path, "hash": r.tracked.hash, "size": r.tracked.size,
                    "files": r.tracked.files, "change": r.change} for r in results])
        return
    for r in results:
        files = f", {r.tracked.files} file(s)" if r.tracked.is_dir else ""
        click.echo(f"{_CHANGE[r.change]} {r.tracked.path} ({r.tracked.size} bytes{files})")
    if any(r.change != "unchanged" for r in results):
        click.echo("commit .pivot/tracked/ and .gitignore; 'pivot push' uploads the data")


@click.command("untrack")
@click.argument("paths", nargs=-1, required=True)
@json_option
def untrack(paths: tuple[str, ...], as_json: bool) -> None:
    """Stop tracking PATHS: their records and .gitignore entries go; the data stays in place."""
    from pivot.ops.track import untrack as forget

    results = forget(paths)
    if as_json:
        echo_json([{"path": r.path, "copied": r.copied} for r in results])
        return
    for r in results:
        click.echo(f"untracked {r.path} (the data stays; commit the removal of its record)")
