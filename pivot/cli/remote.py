"""pivot remote add/list/remove/default"""

from __future__ import annotations

import click

from pivot.cli.common import echo_json, json_option

local_option = click.option("--local", is_flag=True,
                            help="Edit only .pivot/config.local.yaml (this machine, not committed).")


@click.group("remote")
def command() -> None:
    """Manage remotes: where `pivot push` and `pivot pull` send and get cache objects."""


@command.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--default", "make_default", is_flag=True, help="Make it the default remote.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A storage option (endpoint_url, profile, region, retries, connect_timeout, …). "
                   "Credentials (key, secret, token, secret_access_key, …) go to .pivot/config.local.yaml.")
@click.option("--local", is_flag=True, help="Write the whole remote to .pivot/config.local.yaml (not committed).")
@click.option("--force", is_flag=True, help="Replace a remote of the same name.")
def add(name: str, url: str, make_default: bool, options: tuple[str, ...], local: bool, force: bool) -> None:
    """Add remote NAME at URL: a local folder, s3://bucket/prefix, or any fsspec URL."""
    from pivot.ops.remotes import add_remote

    done = add_remote(name, url, options, default=make_default, local=local, force=force)
    suffix = " as the default" if make_default else ""
    click.echo(f"added remote '{name}' ({url}) to {', '.join(done.files)}{suffix}")
    if done.secret_keys and not local:
        click.echo(f"{', '.join(done.secret_keys)} kept in .pivot/config.local.yaml (not committed)")


@command.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List the remotes and their options (secrets hidden)."""
    from pivot.ops.remotes import list_remotes

    listing = list_remotes()
    if as_json:
        echo_json([{"name": s.name, "url": s.url, "default": s.name == listing.default,
                    "options": s.public()} for s in listing.remotes])
        return
    if not listing.remotes:
        click.echo("no remotes; add one with 'pivot remote add NAME URL --default'")
    for s in listing.remotes:
        opts = " ".join(f"{k}={v}" for k, v in s.public().items())
        mark = " (default)" if s.name == listing.default else ""
        click.echo(f"{s.name}\t{s.url}{mark}" + (f"\t{opts}" if opts else ""))


@command.command("remove")
@click.argument("name")
@local_option
def remove(name: str, local: bool) -> None:
    """Remove remote NAME from the configuration (its objects are left alone)."""
    from pivot.ops.remotes import remove_remote

    remove_remote(name, local=local)
    click.echo(f"removed remote '{name}'")


@command.command("default")
@click.argument("name", required=False)
@click.option("--unset", is_flag=True, help="Have no default remote.")
@local_option
def default(name: str | None, unset: bool, local: bool) -> None:
    """Show the default remote, or make NAME the default."""
    from pivot.ops.remotes import default_remote, set_default_remote

    if name is None and not unset:
        click.echo(default_remote() or "no default remote")
        return
    set_default_remote(None if unset else name, local=local)
    click.echo("no default remote" if unset else f"default remote: {name}")
