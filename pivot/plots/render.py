"""Drawing collected plots on one self-contained HTML page with plotly (plotly.js inlined, so it
works offline), and writing that page. plotly is an optional extra, imported only here and only
when a page is drawn."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from pivot.errors import PlotError
from pivot.plots.model import INSTALL_HINT, PlotView, Revision


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
