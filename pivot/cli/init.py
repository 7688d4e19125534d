"""pivot init"""

from __future__ import annotations

import os
from pathlib import Path

import click

IGNORE = """\
# Per-machine state: never committed.
/cache/
/tmp/
/logs/
/state.db*
/config.local.yaml
"""


def _in_git_work_tree(folder: Path) -> bool:
    return any((p / ".git").exists() for p in (folder, *folder.parents))


def init_project(folder: Path) -> bool:
    """Create .pivot/ in `folder`; False when it already exists."""
    from pivot.errors import ProjectError

    if not _in_git_work_tree(folder):
        raise ProjectError(f"{folder} is not inside a git work tree; run 'git init' first, then 'pivot init'")
    pivot_dir = folder / ".pivot"
    if pivot_dir.is_dir():
        return False
    from pivot import atomic
    from pivot.config import INIT_CONFIG  # lazy: `pivot --help` imports every command's module

    (pivot_dir / "stages").mkdir(parents=True)
    atomic.write_text(pivot_dir / "config.yaml", INIT_CONFIG)
    atomic.write_text(pivot_dir / ".gitignore", IGNORE)
    return True


@click.command("init")
def command() -> None:
    """Create .pivot/ here (the project root), inside a git work tree."""
    folder = Path(os.getcwd())
    if init_project(folder):
        click.echo(f"Initialised a Pivot project in {folder}/.pivot")
        click.echo("Next: define stages in pipeline.py, then 'pivot run'. "
                   "Commit .pivot/config.yaml and .pivot/.gitignore.")
    else:
        click.echo(f"{folder}/.pivot already exists; nothing to do")
