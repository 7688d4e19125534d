"""pivot status"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pivot.cli.common import echo_json, json_option, stages_argument

if TYPE_CHECKING:
    from pivot.ops.status import StatusPlan
    from pivot.planning import Planned

_REMOVES = "'pivot run' removes it"


@click.command("status")
@stages_argument
@click.option("--explain", is_flag=True, help="List every reason a stage would run.")
@click.option("--rev", metavar="REV", help="Compare the workspace with the lock files recorded at git revision REV.")
@click.option("--remote", "ask_remote", is_flag=True,
              help="Ask the remote which missing outputs it holds (default: its local index says).")
@click.option("-r", "remote", metavar="NAME", default=None, help="The remote to ask (implies --remote).")
@json_option
def command(stages: tuple[str, ...], explain: bool, rev: str | None, ask_remote: bool, remote: str | None,
            as_json: bool) -> None:
    """Show which stages are stale and why (changes nothing)."""
    from pivot.ops.status import plan_stages

    if rev is not None:
        from pivot.cli.verify import status_against_rev

        status_against_rev(stages, rev, explain, as_json)
        return

    result = plan_stages(stages, ask_remote, remote)
    if as_json:
        _print_json(result)
    else:
        _print_text(result, explain)


def _print_json(result: StatusPlan) -> None:
    # An orphan lock is an entry of its own, marked by "orphan_lock" (never stale: no stage runs).
    echo_json([
        {"stage": p.name, "stale": p.decision.run, "reasons": list(p.decision.reasons),
         "restore": [r.path for r in p.decision.restore], "notes": list(p.notes),
         **({"run_cache": p.hit.label} if p.hit is not None else {}),
         **({"on_remote": [r.path for r in p.decision.fetch], "remote": result.remote} if p.decision.fetch else {})}
        for p in result.planned
    ] + [
        {"stage": o.stage, "orphan_lock": o.path, "stale": False, "reasons": [f"{o.why}; {_REMOVES}"],
         "restore": [], "notes": []}
        for o in result.orphans
    ] + [
        {"stage": None, "tracked": t.path, "state": t.state, "stale": False, "reasons": [t.message],
         "restore": [], "notes": []}
        for t in result.tracked
    ])


def _print_text(result: StatusPlan, explain: bool) -> None:
    planned = result.planned
    stale = [p for p in planned if p.decision.run]
    for p in planned:
        reasons = p.decision.reasons
        if p.decision.run:
            cached = f"; would be restored from run cache ({p.hit.label})" if p.hit is not None else ""
            if explain:
                click.echo(f"{p.name}: stale{cached}")
                for r in reasons:
                    click.echo(f"    - {r}")
            else:
                more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
                click.echo(f"{p.name}: stale ({reasons[0]}{more}){cached}")
        elif p.decision.restore:
            _print_restore(p, result.remote)
        elif explain:
            click.echo(f"{p.name}: up to date")
        if explain:
            for n in p.notes:
                click.echo(f"    note: {n}")
    for o in result.orphans:
        click.echo(f"orphan lock {o.path}: {o.why}; {_REMOVES}")
    for t in result.tracked:
        click.echo(f"{t.path}: {t.message}")
    if stale:
        hits = sum(1 for p in stale if p.hit is not None)
        restorable = f" ({hits} restorable from the run cache)" if hits else ""
        click.echo(f"{len(stale)} of {len(planned)} stage(s) stale{restorable}; run 'pivot run' to update")
    else:
        click.echo(f"all {len(planned)} stage(s) up to date")
    _print_restorable(result)


def _print_restorable(result: StatusPlan) -> None:
    """How many up-to-date stages lack outputs here, and the command that brings them back."""
    planned = result.planned
    on_remote = [p for p in planned if not p.decision.run and p.decision.fetch]
    in_cache = [p for p in planned if not p.decision.run and len(p.decision.restore) > len(p.decision.fetch)]
    if in_cache:
        click.echo(f"{len(in_cache)} stage(s) up to date, outputs in the local cache: run 'pivot checkout'")
    if on_remote:
        click.echo(f"{len(on_remote)} stage(s) up to date, outputs on remote '{result.remote}': run 'pivot pull'")


def _print_restore(p: Planned, remote: str | None) -> None:
    pulled = [r.path for r in p.decision.fetch]
    local = [r.path for r in p.decision.restore if r.path not in pulled]
    if local:
        click.echo(f"{p.name}: up to date; {', '.join(local)} will be restored from the cache")
    if pulled:
        click.echo(f"{p.name}: up to date; {', '.join(pulled)} on remote '{remote}' (not here)")
