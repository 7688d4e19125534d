"""pivot verify"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pivot.cli.common import echo_json, json_option, stages_argument

if TYPE_CHECKING:
    from pivot.verify import RevComparison


@click.command("verify")
@stages_argument
@click.option("--staged", is_flag=True,
              help="Check what is being committed: the staged code (unstaged changes are set aside meanwhile), "
                   "and every lock file and metric staged as it is in the workspace. The pre-commit hook runs this.")
@click.option("--remote", "check_remote", is_flag=True,
              help="Also check that the remote holds every cached output of the lock files (and their files).")
@click.option("-r", "remote_name", metavar="NAME", help="The remote for --remote (default: the default remote).")
@json_option
def command(stages: tuple[str, ...], staged: bool, as_json: bool, check_remote: bool = False,
            remote_name: str | None = None) -> None:
    """Exit 1, listing them, when stages are stale or a metric does not match its lock.

    For CI and git hooks. Outputs that are only absent from this workspace (not pulled yet) are
    not a failure: a lock is checked against the code, params, deps and what is present."""
    from pivot.errors import VerifyFailed
    from pivot.ops.verify import verify_staged, verify_workspace

    if staged:
        if stages:
            raise click.UsageError("--staged checks every stage; do not name stages with it")
        report = verify_staged(Path(os.getcwd()))
    else:
        report = verify_workspace(stages)
    if as_json:
        echo_json(report.to_json())
    else:
        for line in report.lines():
            click.echo(line)
        for note in report.notes:
            click.echo(f"note: {note}")
        if report.ok:
            click.echo(f"all {report.stages} stage(s) match their lock files")
            if report.restorable:
                click.echo(f"note: {len(report.restorable)} output(s) are missing or modified here; "
                           "'pivot checkout' restores them from the cache ('pivot pull' fetches what it lacks)")
    if check_remote or remote_name:
        _check_remote(stages, remote_name, as_json, fail=not report.ok)
    if not report.ok:
        raise VerifyFailed(f"{report.summary()}; run the fixes listed "
                           "('pivot run' updates every stale stage), then commit the lock files and metrics")


def _check_remote(stages: tuple[str, ...], remote_name: str | None, as_json: bool, fail: bool) -> None:
    """`verify --remote`: every object the lock files need must be on the remote."""
    from pivot.errors import VerifyFailed
    from pivot.ops.transfer import summarize
    from pivot.ops.verify import verify_remote

    check = verify_remote(stages, remote_name)
    if as_json:
        echo_json({"remote": check.remote, "missing": check.paths})
    elif not check.missing:
        click.echo(f"remote '{check.remote}' holds every output of the lock files")
    if not check.missing:
        return
    paths = check.paths
    message = (f"{len(check.missing)} object(s) of {len(paths)} output(s) are not on remote '{check.remote}': "
               f"{summarize(paths)}; run 'pivot push -r {check.remote}'")
    if not fail:
        raise VerifyFailed(message)
    click.echo(message, err=True)


def status_against_rev(stages: tuple[str, ...], rev: str, explain: bool, as_json: bool) -> None:
    """`pivot status --rev REV`: what differs between REV's lock files and the workspace now."""
    from pivot.ops.verify import compare_rev

    cmp = compare_rev(stages, rev)
    if as_json:
        echo_json({
            "rev": rev, "commit": cmp.commit, "only_at_rev": cmp.only_at_rev,
            "stages": [{"stage": p.name, "differs": p.decision.run, "reasons": list(p.decision.reasons),
                        "restore": [r.path for r in p.decision.restore], "notes": list(p.notes)}
                       for p in cmp.planned],
            "tracked": [{"path": t.path, "differs": t.differs, "reason": t.reason} for t in cmp.tracked],
        })
        return
    differ = [p for p in cmp.planned if p.decision.run]
    for p in cmp.planned:
        reasons = p.decision.reasons
        if p.decision.run and explain:
            click.echo(f"{p.name}: differs from {rev}")
            for r in reasons:
                click.echo(f"    - {r}")
        elif p.decision.run:
            more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
            click.echo(f"{p.name}: differs from {rev} ({reasons[0]}{more})")
        elif explain:
            click.echo(f"{p.name}: same as {rev}")
    for name in cmp.only_at_rev:
        click.echo(f"{name}: has a lock file at {rev} but is no longer in the pipeline")
    _print_tracked(cmp, rev, explain)
    short = cmp.commit[:10]
    if differ:
        click.echo(f"{len(differ)} of {len(cmp.planned)} stage(s) differ from {rev} ({short})")
    else:
        click.echo(f"all {len(cmp.planned)} stage(s) match the lock files at {rev} ({short})")
    changed = [t for t in cmp.tracked if t.differs]
    if changed:
        click.echo(f"{len(changed)} of {len(cmp.tracked)} tracked path(s) differ from {rev}")


def _print_tracked(cmp: RevComparison, rev: str, explain: bool) -> None:
    for t in cmp.tracked:
        if t.differs:
            click.echo(f"{t.path}: tracked data differs from {rev} ({t.reason})")
        elif explain:
            click.echo(f"{t.path}: tracked data same as {rev}")
