"""pivot checkout"""

from __future__ import annotations

import click

from pivot.cli.common import stages_argument


@click.command("checkout")
@stages_argument
@click.option("--force", is_flag=True, help="Also overwrite outputs whose current content is not in the cache.")
def command(stages: tuple[str, ...], force: bool) -> None:
    """Make the outputs of STAGES (default: all) match their lock files, from the cache."""
    from pivot.errors import CacheError
    from pivot.ops.checkout import checkout_outputs

    result = checkout_outputs(stages, force)
    for text in result.warnings:
        click.echo(f"warning: {text}", err=True)
    for path in result.restored:
        click.echo(f"restored {path}")
    for path, why in result.kept:
        click.echo(f"kept {path}: {why}", err=True)
    if not result.restored and not result.kept and not result.missing:
        click.echo("all outputs already match their lock files")
    if result.missing:
        raise CacheError(
            f"{len(result.missing)} output(s) are not in the cache: {', '.join(result.missing)}; "
            "run 'pivot pull' to fetch them or 'pivot run' to rebuild them"
        )
    if result.kept:
        raise CacheError("some outputs were not overwritten; see above (use --force to overwrite)")
