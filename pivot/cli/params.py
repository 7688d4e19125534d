"""pivot params show/diff"""

from __future__ import annotations

import click

from pivot.cli.common import json_option
from pivot.cli.metrics import all_option, check_format, md_option, print_diff, print_show, project_root, rev_a, rev_b


@click.group("params")
def command() -> None:
    """Show parameter values as the lock files record them, and how they changed between git revisions."""


@command.command("show")
@click.argument("rev", required=False)
@json_option
@md_option
def show(rev: str | None, as_json: bool, markdown: bool) -> None:
    """The parameter values of every stage, as its lock file records them.

    These are the values the stage last ran with (model defaults merged with params.yaml),
    from .pivot/stages, or at git revision REV. A stage whose params changed since is noted."""
    from pivot.metrics import params_snapshot

    check_format(as_json, markdown)
    snapshot = params_snapshot(project_root(), rev)
    print_show(snapshot, "stage", as_json, markdown, "no params recorded: no stage with params= has run yet")


@command.command("diff")
@rev_a
@rev_b
@all_option
@json_option
@md_option
def diff(a: str | None, b: str | None, include_all: bool, as_json: bool, markdown: bool) -> None:
    """How recorded parameter values changed from A to B.

    A defaults to HEAD and B to the workspace's lock files; both may be any git revision,
    read from git objects without checking anything out."""
    from pivot.metrics import params_snapshot

    check_format(as_json, markdown)
    root = project_root()
    old = params_snapshot(root, a or "HEAD")
    new = params_snapshot(root, b)
    print_diff(old, new, "stage", include_all, as_json, markdown)
