"""pivot hooks install / uninstall / run"""

from __future__ import annotations

import os
from pathlib import Path

import click

from pivot.ops.githooks import HOOK_TYPES  # stdlib-only module: cheap to import

hook_type_option = click.option(
    "-t", "--hook-type", "hook_types", multiple=True, type=click.Choice(HOOK_TYPES),
    help="Only this hook (repeatable). Default: all four.")


@click.group("hooks")
def command() -> None:
    """Install or remove Pivot's git hooks: pre-commit refuses stale locks, post-checkout and
    post-merge make outputs follow the branch, pre-push sends the cache objects pushed commits need."""


@command.command("install")
@hook_type_option
def install(hook_types: tuple[str, ...]) -> None:
    """Install the hooks into the repository's git dir (shared by all its work trees). A hook
    you already had keeps running, before Pivot's; installing again changes nothing."""
    from pivot.ops import githooks as hooks

    for c in hooks.install(Path(os.getcwd()), hook_types or HOOK_TYPES):
        if c.action == "unchanged":
            click.echo(f"{c.hook}: already installed at {c.path}")
            continue
        click.echo(f"{c.hook}: {c.action} at {c.path}")
        if c.chained is not None:
            click.echo(f"    your previous {c.hook} hook is kept as {c.chained.name} and still runs first")


@command.command("uninstall")
@hook_type_option
def uninstall(hook_types: tuple[str, ...]) -> None:
    """Remove Pivot's hooks, putting back any hook they had chained."""
    from pivot.ops import githooks as hooks

    for c in hooks.uninstall(Path(os.getcwd()), hook_types or HOOK_TYPES):
        if c.action == "foreign":
            click.echo(f"{c.hook}: {c.path} was not installed by pivot; left alone")
        elif c.action == "removed":
            click.echo(f"{c.hook}: removed" + ("; your previous hook is back in place" if c.restored else ""))
        elif c.restored:
            click.echo(f"{c.hook}: your previous hook is back in place")
        else:
            click.echo(f"{c.hook}: not installed")


@command.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("hook_type", type=click.Choice(HOOK_TYPES))
@click.option("--hook-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the calling hook, where a chained hook may be.")
@click.option("--project", default=".", show_default=True, help="Project folder, relative to the work tree's top.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, hook_type: str, hook_dir: Path | None, project: str, args: tuple[str, ...]) -> None:
    """What an installed hook runs (git passes ARGS). Useful to try a hook by hand."""
    from pivot.hooks import run_hook

    ctx.exit(run_hook(hook_type, args, hook_dir, project))
