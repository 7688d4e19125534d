"""The collected plots as JSON data (`pivot plots --json`): every series, no plotly needed."""

from __future__ import annotations

from typing import Any

from pivot.plots.model import PlotView, Revision, Version


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


