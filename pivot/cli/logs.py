"""pivot logs"""

from __future__ import annotations

import click


@click.command("logs")
@click.argument("stage")
def command(stage: str) -> None:
    """Print what STAGE wrote (stdout, stderr, logging) the last time it ran."""
    from pivot.ops.logs import stage_log

    click.echo(stage_log(stage), nl=False)
