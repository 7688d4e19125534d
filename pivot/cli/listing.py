"""pivot list"""

from __future__ import annotations

from typing import Any

import click

from pivot.cli.common import echo_json, json_option


@click.command("list")
@json_option
def command(as_json: bool) -> None:
    """List the stages in run order, with their deps and outputs (each variant of a sweep apart)."""
    from pivot.ops.pipeline import stage_graph  # lazy: imports the pipeline

    g = stage_graph()
    rows: list[dict[str, Any]] = [
        {
            "stage": name,
            "deps": list(g.deps[name]),
            "outs": [{"path": o.path, "type": str(o.kind)} for o in g.stages[name].outs],
            "upstream": sorted(g.upstream[name]),
            "params": getattr(g.stages[name].params, "__name__", None),
            "exclusive": g.stages[name].exclusive,
            "sweep": g.stages[name].sweep,
            "matrix": dict(g.stages[name].variant),
            "defined_at": g.stages[name].where,
        }
        for name in g.order
    ]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        flag = "  [exclusive]" if row["exclusive"] else ""
        click.echo(f"{row['stage']}  ({row['defined_at']}){flag}")
        for d in row["deps"]:
            click.echo(f"    dep  {d}")
        for o in row["outs"]:
            label = "out" if o["type"] == "out" else o["type"]
            click.echo(f"    {label:<4} {o['path']}")
        if row["params"]:
            click.echo(f"    params {row['params']}")
