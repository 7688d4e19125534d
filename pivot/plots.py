"""Plots: read every Plot output in the workspace or at git revisions, and draw them on one
self-contained HTML page (plotly.js inlined, so it works offline).

Reading is split from drawing: `collect` turns the pipeline's Plot outputs and a list of
revisions into `PlotView` records (data only, no plotly needed; `--json` prints them), and
`render_html` draws those records with plotly, which is an optional extra (`pivot[plots]`).

- The workspace is read from the files on disk; a past revision through its lock files (read
  from git objects) and the objects they name in the local cache. A version that cannot be
  had (not in the cache, no lock at that revision, not in the workspace) becomes a note on its
  plot, not an error, so one missing object never costs the whole page.
- A workspace file that does not fit its Plot (not CSV/TSV/JSON, a missing column, a
  non-numeric y) is an error: it can be fixed now. The same problem in a past revision's file
  is a note, since `x` and `y` come from today's pipeline and may postdate that file.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pivot.errors import PivotError

if TYPE_CHECKING:
    from pivot.cache import Cache
    from pivot.graph import Graph
    from pivot.history import History

WORKSPACE = "workspace"
DELIMITERS = {".csv": ",", ".tsv": "\t"}
SERIES_SUFFIXES = (".csv", ".tsv", ".json")
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
}
ROW_INDEX = "row"  # the x axis when a file has no column to use as x
INSTALL_HINT = "pip install 'pivot[plots]'"


class PlotError(PivotError):
    """A plot file that cannot be drawn, or plotly is missing."""


class PlotDataError(ValueError):
    """A file does not fit its Plot; the caller says where (workspace error, or revision note)."""


# -- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlotDef:
    """A Plot output as the current pipeline declares it."""

    path: str
    stage: str | None
    x: str | None = None
    y: str | None = None


@dataclass(frozen=True)
class Revision:
    name: str  # as the user typed it, or "workspace"
    commit: str | None = None  # None for the workspace

    @property
    def label(self) -> str:
        if self.commit is None or self.commit.startswith(self.name):
            return self.name if self.commit is None else self.commit[:7]
        return f"{self.name} ({self.commit[:7]})"


@dataclass(frozen=True)
class Series:
    name: str
    values: tuple[float | None, ...]


@dataclass(frozen=True)
class Table:
    """The series of one file: one x column and one or more numeric y columns."""

    x_name: str
    x: tuple[Any, ...]
    series: tuple[Series, ...]
    mode: str  # "line" (x in order, or not numeric) or "scatter" (numeric x out of order)


@dataclass(frozen=True)
class Image:
    mime: str
    data: bytes

    def data_uri(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode()}"


@dataclass(frozen=True)
class Version:
    """One plot file at one revision: a table, an image, or a note saying why there is neither."""

    rev: Revision
    source: str | None = None  # the file read: a workspace path or a cache object
    table: Table | None = None
    image: Image | None = None
    note: str | None = None


@dataclass(frozen=True)
class PlotView:
    """One plot file across the revisions asked for."""

    path: str
    definition: PlotDef
    versions: tuple[Version, ...]

    @property
    def is_image(self) -> bool:
        return Path(self.path).suffix.lower() in IMAGE_TYPES


# -- which plots, which revisions -----------------------------------------------------------------


def definitions(graph: Graph) -> list[PlotDef]:
    """The Plot outputs of the current pipeline, in run order."""
    from pivot.outputs import Plot

    found = []
    for name in graph.order:
        for out in graph.stages[name].outs:
            path = out.path
            if isinstance(out, Plot):
                found.append(PlotDef(path, name, out.x, out.y))
    return found


def diff_revisions(revs: tuple[str, ...] | list[str]) -> list[str]:
    """What `plots diff` compares: none given -> HEAD and the workspace; one -> it and the
    workspace; more -> exactly those (name `workspace` to include it)."""
    revs = list(dict.fromkeys(revs))
    if len(revs) <= 1:
        revs = (revs or ["HEAD"]) + [WORKSPACE]
    return list(dict.fromkeys(revs))


def resolve(history: History | None, names: list[str]) -> list[Revision]:
    """Each name as a Revision; an unknown one raises GitError before anything is read."""
    resolved = []
    for name in names:
        if name == WORKSPACE:
            resolved.append(Revision(WORKSPACE))
        else:
            assert history is not None
            from pivot.metrics import resolve as commit_id  # says so when there are no commits yet

            resolved.append(Revision(name, commit_id(history, name)))
    return resolved


# -- reading files --------------------------------------------------------------------------------


def _supported(path: str) -> bool:
    suffix = Path(path).suffix.lower()
    return suffix in SERIES_SUFFIXES or suffix in IMAGE_TYPES


# A found file: (bytes, where they came from) or a note saying why there are none.
Found = tuple[bytes, str] | str


def _workspace_files(root: Path, d: PlotDef) -> dict[str, Found]:
    full = root / d.path
    fix = f"run 'pivot checkout' or 'pivot run {d.stage}'" if d.stage else "run 'pivot checkout'"
    if not full.exists():
        return {d.path: f"not in the workspace; {fix}"}
    if not full.is_dir():
        return {d.path: (full.read_bytes(), d.path)}
    files: dict[str, Found] = {}
    for dirpath, dirnames, filenames in os.walk(full):
        dirnames.sort()
        for name in sorted(filenames):
            rel = Path(dirpath, name).relative_to(root).as_posix()
            if _supported(rel):
                files[rel] = (Path(dirpath, name).read_bytes(), rel)
    return files or {d.path: "the folder holds no CSV, TSV, JSON or image file"}


def _cached(cache: Cache, digest: str, rev: Revision) -> Found:
    obj = cache.path(digest)
    try:
        return obj.read_bytes(), str(obj)
    except FileNotFoundError:
        fetch = "pivot fetch" if rev.name == "HEAD" else "pivot fetch --all-commits"
        return f"not in the local cache (object {digest[:10]}…); run '{fetch}' to download it from the remote"


def _revision_files(cache: Cache, d: PlotDef, rec: Any, rev: Revision) -> dict[str, Found]:
    if not rec.is_dir:
        return {d.path: _cached(cache, rec.hash, rev)}
    from pivot.errors import CacheError

    try:
        entries = cache.read_manifest(rec.hash)
    except CacheError:
        return {d.path: _cached(cache, rec.hash, rev)}  # the manifest itself is missing: same note
    files = {f"{d.path}/{e.path}": _cached(cache, e.hash, rev) for e in entries if _supported(e.path)}
    return files or {d.path: "the folder holds no CSV, TSV, JSON or image file"}


def _plot_records(history: History, rev: Revision) -> dict[str, tuple[str, Any]]:
    """path -> (stage, lock record) of every plot the revision's lock files record."""
    assert rev.commit is not None
    return {rec.path: (stage, rec) for stage, lock in history.locks_at(rev.commit).items()
            for rec in lock.outs if rec.kind == "plot"}


# -- parsing ------------------------------------------------------------------------------------


def _number(value: Any) -> int | float | None:
    """A cell as a number; None for an empty cell (a gap); ValueError when it is not a number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(value)
    number: int | float
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            number = float(value.strip())
    else:
        number = value
    return None if isinstance(number, float) and not math.isfinite(number) else number


# Columns by name, each a list of raw cells; and how to name row i in a message.
Columns = dict[str, list[Any]]


def _read_delimited(text: str, delimiter: str) -> tuple[Columns, Callable[[int], str]]:
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() or f"column {i + 1}" for i, cell in enumerate(row)]
                continue
            if len(row) != len(header):
                raise PlotDataError(f"line {reader.line_num} has {len(row)} fields but the header has "
                                    f"{len(header)}; is it really {'TSV' if delimiter == chr(9) else 'CSV'}?")
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise PlotDataError(f"not readable as CSV (line {reader.line_num}: {exc})") from None
    if header is None:
        raise PlotDataError("the file is empty")
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise PlotDataError(f"the header names column '{dup}' twice")
    return {h: [r[i] for r in rows] for i, h in enumerate(header)}, lambda i: f"line {lines[i]}"


def _read_json(text: str) -> tuple[Columns, Callable[[int], str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlotDataError(f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if isinstance(data, dict):
        tables = [k for k, v in data.items() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)]
        if len(tables) == 1:
            data = data[tables[0]]  # {"train": [{...}, …]}
        elif len(tables) > 1:
            raise PlotDataError(f"holds several lists of records ({', '.join(tables)}); "
                                "a plot file must hold one table")
        elif data and all(isinstance(v, list) for v in data.values()):
            lengths = {len(v) for v in data.values()}
            if len(lengths) > 1:
                raise PlotDataError("its columns have different lengths")
            return dict(data), lambda i: f"item {i}"
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        names: dict[str, None] = {}
        for record in data:
            names.update(dict.fromkeys(record))
        return {n: [r.get(n) for r in data] for n in names}, lambda i: f"record {i}"
    raise PlotDataError('expected a list of records ([{"epoch": 1, "loss": 0.5}, …]) '
                        'or an object of columns ({"epoch": [1, 2], "loss": [0.5, 0.4]})')


def _read_columns(path: str, data: bytes) -> tuple[Columns, Callable[[int], str]]:
    suffix = Path(path).suffix.lower()
    if suffix not in SERIES_SUFFIXES:
        raise PlotDataError(f"'{suffix or path}' files cannot be plotted; use .csv, .tsv or .json "
                            f"series, or an image ({', '.join(IMAGE_TYPES)})")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PlotDataError("not UTF-8 text") from None
    return _read_json(text) if suffix == ".json" else _read_delimited(text, DELIMITERS[suffix])


def _numeric(values: list[Any]) -> list[int | float | None] | None:
    try:
        return [_number(v) for v in values]
    except ValueError:
        return None


def _first_non_number(values: list[Any], row: Callable[[int], str]) -> str:
    for i, v in enumerate(values):
        try:
            _number(v)
        except ValueError:
            return f"{json.dumps(v) if not isinstance(v, str) else repr(v)} on {row(i)}"
    return ""


def _choose_x(columns: Columns, x: str | None, y: str | None) -> str | None:
    """The x column: as declared; else the first column, unless it is the only one or is y
    (then None: the row number)."""
    if x is not None:
        return x
    names = list(columns)
    if len(names) < 2 or names[0] == y:
        return None
    return names[0]


def parse_table(path: str, data: bytes, x: str | None = None, y: str | None = None) -> Table:
    """The series of a CSV, TSV or JSON file. Raises PlotDataError saying what does not fit."""
    columns, row = _read_columns(path, data)
    available = ", ".join(columns) or "none"
    for role, name in (("x", x), ("y", y)):
        if name is not None and name not in columns:
            raise PlotDataError(f"{role} column '{name}' not found; its columns are: {available}")
    x_name = _choose_x(columns, x, y)
    n = len(next(iter(columns.values()), []))
    if n == 0:
        raise PlotDataError("it has a header but no rows of data")
    if x_name is None:
        x_values: list[Any] = list(range(n))
    else:
        numeric_x = _numeric(columns[x_name])
        x_values = numeric_x if numeric_x is not None else [_label(v) for v in columns[x_name]]
    series = []
    for name in [y] if y is not None else [c for c in columns if c != x_name]:
        values = _numeric(columns[name])
        if values is None:
            if y is not None:
                raise PlotDataError(f"y column '{name}' is not numeric: {_first_non_number(columns[name], row)}")
            continue  # with y unset, only the numeric columns are drawn
        series.append(Series(name, tuple(values)))
    if not series:
        raise PlotDataError(f"no numeric column to draw besides x '{x_name or ROW_INDEX}' "
                            f"(columns: {available}); set y= on the Plot")
    return Table(x_name or ROW_INDEX, tuple(x_values), tuple(series), _mode(x_values))


def _label(value: Any) -> str:
    """A non-numeric x value, as the text the axis shows."""
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)


def _mode(x: list[Any]) -> str:
    numbers = [v for v in x if v is not None]
    if not all(isinstance(v, (int, float)) for v in numbers):
        return "line"
    return "line" if all(a <= b for a, b in zip(numbers, numbers[1:])) else "scatter"


def _version(rev: Revision, path: str, d: PlotDef, found: Found) -> Version:
    if isinstance(found, str):
        return Version(rev, note=found)
    data, source = found
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_TYPES:
        return Version(rev, source, image=Image(IMAGE_TYPES[suffix], data))
    try:
        return Version(rev, source, table=parse_table(path, data, d.x, d.y))
    except PlotDataError as exc:
        if rev.commit is None:
            raise PlotError(f"plot {path}{_of(d)}: {exc}") from None
        return Version(rev, source, note=f"cannot be drawn: {exc}")


def _of(d: PlotDef) -> str:
    return f" (stage '{d.stage}')" if d.stage else ""


# -- collecting ---------------------------------------------------------------------------------


def collect(root: Path, cache: Cache, defs: list[PlotDef], revisions: list[Revision],
            history: History | None = None) -> list[PlotView]:
    """Every plot file of `defs` (and of plots that only a revision's locks record) at each
    revision. A directory Plot contributes one view per supported file inside it."""
    by_path: dict[str, PlotDef] = {d.path: d for d in defs}
    per_rev: list[dict[str, tuple[PlotDef, Found]]] = []
    for rev in revisions:
        files: dict[str, tuple[PlotDef, Found]] = {}
        if rev.commit is None:
            for d in defs:
                files.update({p: (d, f) for p, f in _workspace_files(root, d).items()})
        else:
            assert history is not None
            records = _plot_records(history, rev)
            for path, (stage, rec) in records.items():
                by_path.setdefault(path, PlotDef(path, stage))  # a plot today's pipeline lacks
            for d in by_path.values():
                if d.path in records:
                    files.update({p: (d, f) for p, f in _revision_files(cache, d, records[d.path][1], rev).items()})
                else:
                    files[d.path] = (d, f"no lock file at {rev.name} records it "
                                        "(the stage had not run there, or did not declare this plot)")
        per_rev.append(files)
    order = list(dict.fromkeys(p for files in per_rev for p in files))
    order.sort(key=lambda p: list(by_path).index(_owner(p, by_path)))
    views = []
    for path in order:
        d = next(files[path][0] for files in per_rev if path in files)
        current = _owner(path, by_path) in {c.path for c in defs}
        versions = [_version(rev, path, d, files[path][1]) if path in files
                    else Version(rev, note=_absent(rev, current))
                    for rev, files in zip(revisions, per_rev)]
        views.append(PlotView(path, d, tuple(versions)))
    return views


def _owner(path: str, by_path: dict[str, PlotDef]) -> str:
    while path not in by_path and "/" in path:
        path = path.rsplit("/", 1)[0]
    return path


def _absent(rev: Revision, current: bool) -> str:
    if rev.commit is not None:
        return f"not present at {rev.name}"
    return "not in the workspace" if current else "not a Plot of the current pipeline"


def notes(views: list[PlotView]) -> list[str]:
    return [f"{v.path} at {ver.rev.name}: {ver.note}" for v in views for ver in v.versions if ver.note]


# -- JSON -----------------------------------------------------------------------------------------


def as_json(views: list[PlotView], revisions: list[Revision]) -> dict[str, Any]:
    return {
        "revisions": [{"name": r.name, "commit": r.commit} for r in revisions],
        "plots": [
            {
                "path": v.path,
                "stage": v.definition.stage,
                "x": v.definition.x,
                "y": v.definition.y,
                "kind": "image" if v.is_image else "series",
                "versions": [_version_json(ver) for ver in v.versions],
            }
            for v in views
        ],
    }


def _version_json(ver: Version) -> dict[str, Any]:
    out: dict[str, Any] = {"rev": ver.rev.name, "commit": ver.rev.commit, "source": ver.source, "note": ver.note}
    if ver.table is not None:
        t = ver.table
        out["mode"] = t.mode
        out["x"] = {"name": t.x_name, "values": list(t.x)}
        out["series"] = [{"name": s.name, "values": list(s.values)} for s in t.series]
    if ver.image is not None:
        out["image"] = {"type": ver.image.mime, "bytes": len(ver.image.data)}
    return out


# -- HTML -----------------------------------------------------------------------------------------


def require_plotly() -> Any:
    """The plotly package, or a PlotError saying how to install it."""
    try:
        import plotly.graph_objects
        import plotly.io
        import plotly.offline
    except ImportError:
        raise PlotError(f"drawing plots needs plotly, which is not installed; run: {INSTALL_HINT} "
                        "(or use --json to get the data without it)") from None
    import plotly

    return plotly


# In diff mode each revision has a colour and each series a dash (or marker) style, so "what
# changed between revisions" reads as a change of colour.
_COLOURS = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880")
_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "cross")
_CONFIG = {"displaylogo": False, "responsive": True}


def _figure_html(plotly: Any, view: PlotView, index: int) -> str:
    go = plotly.graph_objects
    diff = len(view.versions) > 1
    traces = []
    x_title = ""
    for i, ver in enumerate(view.versions):
        if ver.table is None:
            continue
        t = ver.table
        x_title = t.x_name
        mode = "markers" if t.mode == "scatter" else ("lines+markers" if len(t.x) <= 60 else "lines")
        for j, s in enumerate(t.series):
            style: dict[str, Any] = {}
            if diff:
                colour = _COLOURS[i % len(_COLOURS)]
                style = {"line": {"color": colour, "dash": _DASHES[j % len(_DASHES)]},
                         "marker": {"color": colour, "symbol": _SYMBOLS[j % len(_SYMBOLS)]}}
            name = f"{ver.rev.name}: {s.name}" if diff else s.name
            traces.append(go.Scatter(x=list(t.x), y=list(s.values), name=name, mode=mode,
                                     legendgroup=ver.rev.name, **style))
    fig = go.Figure(traces)
    fig.update_layout(template="plotly_white", showlegend=True, height=420,
                      margin={"l": 60, "r": 20, "t": 20, "b": 50},
                      xaxis_title=x_title, legend={"orientation": "h", "y": -0.18})
    div: str = plotly.io.to_html(fig, include_plotlyjs=False, full_html=False, config=_CONFIG,
                                 div_id=f"pivot-plot-{index}", default_height="440px")
    return div


def _images_html(view: PlotView) -> str:
    figures = []
    for ver in view.versions:
        if ver.image is None:
            continue
        figures.append(f'<figure><img src="{ver.image.data_uri()}" alt="{html.escape(view.path)} at '
                       f'{html.escape(ver.rev.label)}"><figcaption>{html.escape(ver.rev.label)}</figcaption></figure>')
    return f'<div class="images">{"".join(figures)}</div>' if figures else ""


def _section(plotly: Any, view: PlotView, index: int) -> str:
    d = view.definition
    meta = [f"stage {d.stage}" if d.stage else "not in the current pipeline"]
    if not view.is_image:
        meta += [f"x: {d.x or 'first column'}", f"y: {d.y or 'numeric columns'}"]
    notes_html = "".join(f"<li><b>{html.escape(v.rev.label)}</b>: {html.escape(v.note)}</li>"
                         for v in view.versions if v.note)
    if view.is_image:
        body = _images_html(view)
    elif any(v.table is not None for v in view.versions):
        body = _figure_html(plotly, view, index)
    else:
        body = ""
    return (f'<section class="plot" id="{html.escape(view.path)}"><h2>{html.escape(view.path)}</h2>'
            f'<p class="meta">{html.escape(" · ".join(meta))}</p>'
            f'{f"<ul class=notes>{notes_html}</ul>" if notes_html else ""}{body}</section>')


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1f2933}
header{background:#1f2933;color:#fff;padding:14px 28px}
header h1{font-size:20px;margin:0}
header p{margin:4px 0 0;color:#cbd2d9;font-size:14px}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:18px;padding:18px 28px}
section.plot{background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:12px 16px;min-width:0}
section.plot h2{font-size:16px;margin:0;font-family:ui-monospace,Menlo,Consolas,monospace}
p.meta{margin:2px 0 6px;color:#616e7c;font-size:13px}
ul.notes{margin:6px 0;padding:8px 12px 8px 28px;background:#fffbea;border:1px solid #f7d070;
  border-radius:6px;font-size:13px}
div.images{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;text-align:center}
figure img{max-width:100%;max-height:420px;border:1px solid #e4e7eb}
figcaption{font-size:13px;color:#616e7c}
"""


def render_html(views: list[PlotView], revisions: list[Revision], project: str) -> str:
    """One self-contained page: plotly.js inlined once, each plot a div, images as data: URIs."""
    plotly = require_plotly()
    title = " vs ".join(r.label for r in revisions)
    sections = "\n".join(_section(plotly, v, i) for i, v in enumerate(views))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Pivot plots: {html.escape(project)}</title><style>{_STYLE}</style>"
        f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script></head>\n'
        f"<body><header><h1>Pivot plots: {html.escape(project)}</h1><p>{html.escape(title)}</p></header>\n"
        f"<main>\n{sections}\n</main></body></html>\n"
    )


def write_page(path: Path, page: str) -> None:
    """Write atomically. A page in the default folder .pivot/plots/ keeps that folder out of git."""
    from pivot import atomic

    if path.parent.name == "plots" and path.parent.parent.name == ".pivot":
        ignore = path.parent / ".gitignore"
        if not ignore.exists():
            atomic.write_text(ignore, "# Pages written by 'pivot plots'; not for git.\n*\n")
    atomic.write_text(path, page)
