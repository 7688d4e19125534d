"""Plots: read every Plot output in the workspace or at git revisions, and draw them on one
self-contained HTML page (plotly.js inlined, so it works offline).

Reading is split from drawing: `collect` turns the pipeline's Plot outputs and a list of
revisions into `PlotView` records (data only, no plotly needed; `--json` prints them with
`as_json`), and `render_html` draws those records with plotly, which is an optional extra
(`pivot[plots]`) imported only when a page is drawn.

- `model`: the records (`PlotDef`, `Revision`, `Table`, `Version`, `PlotView`, …) and errors;
- `parse`: a CSV, TSV or JSON file's bytes into a `Table` (`parse_table`);
- `collect`: which plots and revisions, and each plot file at each revision;
- `export`: the collected plots as JSON data;
- `render`: the HTML page, drawn with plotly, and writing it.
"""

from pivot.errors import PlotDataError, PlotError
from pivot.plots.collect import collect, definitions, diff_revisions, notes, resolve
from pivot.plots.export import as_json
from pivot.plots.model import (
    DELIMITERS,
    IMAGE_TYPES,
    INSTALL_HINT,
    ROW_INDEX,
    SERIES_SUFFIXES,
    WORKSPACE,
    Image,
    PlotDef,
    PlotView,
    Revision,
    Series,
    Table,
    Version,
)
from pivot.plots.parse import parse_table
from pivot.plots.render import render_html, require_plotly, write_page

__all__ = [
    "DELIMITERS",
    "IMAGE_TYPES",
    "INSTALL_HINT",
    "ROW_INDEX",
    "SERIES_SUFFIXES",
    "WORKSPACE",
    "Image",
    "PlotDataError",
    "PlotDef",
    "PlotError",
    "PlotView",
    "Revision",
    "Series",
    "Table",
    "Version",
    "as_json",
    "collect",
    "definitions",
    "diff_revisions",
    "notes",
    "parse_table",
    "render_html",
    "require_plotly",
    "resolve",
    "write_page",
]
