"""pivot remote add/list/remove/default"""

from __future__ import annotations

import click

from pivot.cli._common import echo_json, json_option


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
    from pivot import remote_config
    from pivot.project import find_root

    parsed = dict(remote_config.parse_option(o) for o in options)
    written = remote_config.add(find_root(), name, url, parsed, default=make_default, local=local, force=force)
    secret = sorted(k for k in parsed if k in remote_config.SECRET_KEYS)
    click.echo(f"added remote '{name}' ({url}) to {', '.join(written)}" + (" as the default" if make_default else ""))
    if secret and not local:
        click.echo(f"{', '.join(secret)} kept in .pivot/config.local.yaml (not committed)")


@command.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List the remotes and their options (secrets hidden)."""
    from pivot.project import load_project
    from pivot.remote_config import resolve

    config = load_project().config
    specs = [resolve(config, n) for n in sorted(config.remotes)]
    if as_json:
        echo_json([{"name": s.name, "url": s.url, "default": s.name == config.default_remote,
                    "options": s.public()} for s in specs])
        return
    if not specs:
        click.echo("no remotes; add one with 'pivot remote add NAME URL --default'")
    for s in specs:
        opts = " ".join(f"{k}={v}" for k, v in s.public().items())
        mark = " (default)" if s.name == config.default_remote else ""
        click.echo(f"{s.name}\t{s.url}{mark}" + (f"\t{opts}" if opts else ""))


@command.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Remove remote NAME from the configuration (its objects are left alone)."""
    from pivot import remote_config
    from pivot.project import find_root

    remote_config.remove(find_root(), name)
    click.echo(f"removed remote '{name}'")


@command.command("default")
@click.argument("name", required=False)
@click.option("--unset", is_flag=True, help="Have no default remote.")
def default(name: str | None, unset: bool) -> None:
    """Show the default remote, or make NAME the default."""
    from pivot import remote_config
    from pivot.project import load_project

    project = load_project()
    if name is None and not unset:
        click.echo(project.config.default_remote or "no default remote")
        return
    remote_config.set_default(project.root, project.config, None if unset else name)
    click.echo("no default remote" if unset else f"default remote: {name}")
