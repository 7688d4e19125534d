"""pivot dag"""

from __future__ import annotations

import click

from pivot.cli.common import echo_json, json_option


def _levels(order: list[str], upstream: dict[str, set[str]]) -> dict[str, int]:
    level: dict[str, int] = {}
    for n in order:
        level[n] = 1 + max((level[u] for u in upstream[n]), default=-1)
    return level


def _dot_id(name: str) -> str:
    """A stage name as a quoted dot identifier (a sweep value may hold quotes)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@click.command("dag")
@json_option
@click.option("--dot", is_flag=True, help="Print the graph in Graphviz dot format.")
def command(as_json: bool, dot: bool) -> None:
    """Draw the stage graph: stages by level, each with the stages it needs."""
    from pivot.ops.pipeline import stage_graph  # lazy: imports the pipeline

    g = stage_graph()
    order, upstream = list(g.order), {n: set(u) for n, u in g.upstream.items()}
    edges = sorted((u, n) for n in order for u in upstream[n])
    if as_json:
        echo_json({"stages": order, "edges": [{"from": u, "to": n} for u, n in edges]})
        return
    if dot:
        click.echo("digraph pivot {")
        for n in order:
            click.echo(f"  {_dot_id(n)};")
        for u, n in edges:
            click.echo(f"  {_dot_id(u)} -> {_dot_id(n)};")
        click.echo("}")
        return
    level = _levels(order, upstream)
    width = max((len(n) for n in order), default=0)
    for depth in range(max(level.values(), default=-1) + 1):
        click.echo(f"level {depth}")
        for n in order:
            if level[n] == depth:
                needs = ", ".join(sorted(upstream[n]))
                click.echo(f"  {n:<{width}}  <- {needs}" if needs else f"  {n}")
