"""pivot logs"""

from __future__ import annotations

import click


@click.command("logs")
@click.argument("stage")
def command(stage: str) -> None:
    """Print what STAGE wrote (stdout, stderr, logging) the last time it ran."""
    from pivot.errors import PivotError
    from pivot.project import find_root

    root = find_root()
    path = root / ".pivot" / "logs" / f"{stage}.log"
    if not path.exists():
        raise PivotError(f"no log for stage '{stage}' in {path.parent}; it has not run on this machine yet")
    click.echo(path.read_text(errors="replace"), nl=False)
