"""pivot plots show | diff [REV...]"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pivot.cli.common import echo_json

DEFAULT_PAGE = ".pivot/plots/index.html"


@click.group("plots")
def command() -> None:
    """Draw every Plot output on one self-contained HTML page (works offline)."""


def _page_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--json", "as_json", is_flag=True,
                        help="Print the data series as JSON instead of writing the page (needs no plotly).")(func)
    func = click.option("--open", "open_page", is_flag=True, help="Open the page in a web browser.")(func)
    return click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help=f"Write the page here (default: {DEFAULT_PAGE} at the project root).")(func)


@command.command("show", short_help="Draw the plots of the workspace or of one revision.")
@click.argument("rev", required=False, default="workspace")
@_page_options
def show(rev: str, out: Path | None, open_page: bool, as_json: bool) -> None:
    """The plots of the workspace, or of git revision REV (read from the cache)."""
    _run([rev], out, open_page, as_json)


@command.command("diff", short_help="Overlay the plots of several revisions, with a legend.")
@click.argument("revs", nargs=-1)
@_page_options
def diff(revs: tuple[str, ...], out: Path | None, open_page: bool, as_json: bool) -> None:
    """Overlay the plots of git revisions: none given, HEAD and the workspace; one, it and the
    workspace; several, exactly those (name 'workspace' to include it)."""
    from pivot import plots

    _run(plots.diff_revisions(revs), out, open_page, as_json)


def _run(names: list[str], out: Path | None, open_page: bool, as_json: bool) -> None:
    from pivot import plots
    from pivot.ops.plots import collect_plots

    out = out.resolve() if out is not None else None  # before loading the pipeline moves to the root
    if not as_json:
        plots.require_plotly()  # fail before reading anything
    collected = collect_plots(names)
    views, revisions, root = collected.views, collected.revisions, collected.root
    for note in plots.notes(views):
        click.echo(f"note: {note}", err=True)
    if as_json:
        echo_json(plots.as_json(views, revisions))
        return
    if not views:
        click.echo("No Plot outputs in the pipeline: declare one in a stage's outs, "
                   "for example Plot(\"loss.csv\", x=\"epoch\", y=\"loss\").")
        return
    page = out or root / DEFAULT_PAGE
    text = plots.render_html(views, revisions, root.name)
    plots.write_page(page, text)
    size = len(text.encode()) / 1e6
    click.echo(f"Wrote {len(views)} plot(s) of {' vs '.join(r.label for r in revisions)} "
               f"to {page} ({size:.1f} MB, works offline)")
    if open_page:
        import webbrowser

        if not webbrowser.open(page.as_uri()):
            click.echo(f"Could not start a web browser; open {page} yourself.", err=True)

