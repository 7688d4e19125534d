"""pivot metrics show/diff, and the output helpers `pivot params` shares."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from pivot.cli.common import echo_json, json_option

if TYPE_CHECKING:
    from pivot.metrics import Snapshot

md_option = click.option("--md", "markdown", is_flag=True, help="Print a markdown table.")
all_option = click.option("--all", "include_all", is_flag=True, help="Also list values that did not change.")
rev_a = click.argument("a", metavar="[A]", required=False)
rev_b = click.argument("b", metavar="[B]", required=False)


def project_root() -> Path:
    from pivot.project import find_root

    return find_root()


def check_format(as_json: bool, markdown: bool) -> None:
    if as_json and markdown:
        raise click.UsageError("choose one of --json and --md")


def print_notes(notes: tuple[str, ...] | list[str]) -> None:
    for note in notes:
        click.echo(f"note: {note}", err=True)


def print_caption(text: str, markdown: bool) -> None:
    """Which revisions a table is about; in markdown, a paragraph of its own above the table."""
    click.echo(text)
    if markdown:
        click.echo()


def print_show(snapshot: Snapshot, group: str, as_json: bool, markdown: bool, empty: str) -> None:
    from pivot import metrics

    if as_json:
        echo_json(metrics.show_json(snapshot, group))
        return
    print_notes(snapshot.notes)
    if snapshot.commit is not None:
        print_caption(f"at {snapshot.label}", markdown)
    if not snapshot.values:
        click.echo(empty)
        return
    click.echo(metrics.render(*metrics.show_table(snapshot, group), markdown=markdown))


def print_diff(old: Snapshot, new: Snapshot, group: str, include_all: bool, as_json: bool, markdown: bool) -> None:
    from pivot import metrics

    changes = metrics.diff(old.values, new.values, include_all)
    if as_json:
        echo_json(metrics.diff_json(old, new, changes, group))
        return
    print_notes([*old.notes, *new.notes])
    print_caption(f"{old.label} -> {new.label}", markdown)
    if not changes:
        click.echo("no values" if include_all else "no changes")
        return
    click.echo(metrics.render(*metrics.diff_table(changes, group), markdown=markdown))


@click.group("metrics")
def command() -> None:
    """Show metric values, and how they changed between git revisions."""


@command.command("show")
@click.argument("rev", required=False)
@json_option
@md_option
@click.option("--all-stages", is_flag=True,
              help="One row per stage (each variant of a sweep), with its matrix values and metrics as columns.")
@click.option("--stage", "stages", multiple=True, metavar="NAME",
              help="With --all-stages: only this stage, or every variant of this sweep. Repeatable.")
@click.option("--sort", "sort_by", metavar="COLUMN", help="With --all-stages: order rows by this column.")
@click.option("--desc", is_flag=True, help="With --sort: largest first.")
def show(rev: str | None, as_json: bool, markdown: bool, all_stages: bool, stages: tuple[str, ...],
         sort_by: str | None, desc: bool) -> None:
    """Every value of every Metric output, nested keys flattened as a.b.c.

    In the workspace (the Metric outputs of the current pipeline), or at git revision REV
    (the metrics its lock files list, read from git objects)."""
    from pivot.metrics import metrics_snapshot

    check_format(as_json, markdown)
    if all_stages:
        print_stage_table(rev, stages, sort_by, desc, as_json, markdown)
        return
    for flag, given in (("--stage", stages), ("--sort", sort_by), ("--desc", desc)):
        if given:
            raise click.UsageError(f"{flag} applies to --all-stages only")
    snapshot = metrics_snapshot(project_root(), rev)
    print_show(snapshot, "path", as_json, markdown, "no metrics: declare Metric(\"…\") outputs in your stages")


def print_stage_table(rev: str | None, stages: tuple[str, ...], sort_by: str | None, desc: bool, as_json: bool,
                      markdown: bool) -> None:
    from pivot import stage_table

    if desc and sort_by is None:
        raise click.UsageError("--desc applies to --sort only")
    table = stage_table.stage_table(project_root(), rev, stages)
    if sort_by is not None:
        table = stage_table.sorted_by(table, sort_by, desc)
    if as_json:
        echo_json(stage_table.as_json(table))
        return
    print_notes(table.notes)
    if table.commit is not None:
        print_caption(f"at {table.rev} ({table.commit[:10]})", markdown)
    if not table.rows:
        click.echo("no metrics: declare Metric(\"…\") outputs in your stages")
        return
    click.echo(stage_table.rendered(table, markdown))


@command.command("diff")
@rev_a
@rev_b
@all_option
@json_option
@md_option
def diff(a: str | None, b: str | None, include_all: bool, as_json: bool, markdown: bool) -> None:
    """How metric values changed from A to B: numeric delta and percent.

    A defaults to HEAD and B to the workspace; both may be any git revision (branch, tag,
    commit, HEAD~1), read from git objects without checking anything out."""
    from pivot.metrics import metrics_snapshot

    check_format(as_json, markdown)
    root = project_root()
    old = metrics_snapshot(root, a or "HEAD")
    new = metrics_snapshot(root, b)
    print_diff(old, new, "path", include_all, as_json, markdown)
