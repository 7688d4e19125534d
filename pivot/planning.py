"""The plan of a run: each selected stage decided in order, as `pivot run` would (changes nothing)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from pivot.repo import Prepared, Repo, gc_paused
from pivot.runcache import Hit, RunCache
from pivot.status import UP_TO_DATE, Decision, Policy, decide


@dataclass(frozen=True)
class Planned:
    name: str
    decision: Decision
    notes: tuple[str, ...] = ()
    prepared: Prepared | None = None  # what the decision was made from (verify reads it)
    hit: Hit | None = None  # stale, but a run record restores it instead (docs/run-cache.md)


def plan(repo: Repo, targets: tuple[str, ...] = (), single: bool = False, force: bool = False,
         policy: Policy = Policy.RUN, on_remote: frozenset[str] = frozenset(),
         runs: RunCache | None = None) -> list[Planned]:
    """What `pivot run` would do, without changing anything. Downstream of a stage that would run
    is reported as running too, since its deps are about to change. `on_remote`: hashes of
    locked outputs a remote holds (restorable from there, see pivot/fresh.py). `runs`: stale
    stages are looked up in the run cache, and a hit counts as restored (its outputs known), so
    the stages after it are decided too: the remote is asked once per wave of such stages."""
    with gc_paused(keep=True), repo.hasher.steady(), repo.uptodate.steady():
        planned = _plan(repo, targets, single, force, policy, on_remote, runs)
    repo.remember()
    return planned


def _plan(repo: Repo, targets: tuple[str, ...], single: bool, force: bool, policy: Policy,
          on_remote: frozenset[str], runs: RunCache | None) -> list[Planned]:
    names = repo.graph.select(list(targets), single)
    repo.check_params(names)
    will_run: set[str] = set()
    expected: dict[str, str] = {}
    result: dict[str, Planned] = {}
    pending = names
    while pending:
        asks: dict[str, Planned] = {}
        later: dict[str, None] = {}
        for name in pending:
            upstream = repo.graph.upstream[name]
            if (asks or later) and any(u in asks or u in later for u in upstream):
                later[name] = None  # decided after its upstream's lookup
                continue
            ups = tuple(sorted(upstream & will_run)) if upstream and will_run else ()
            proven = None if ups or force else repo.proven(name)
            if proven is not None:  # as when last found up to date: nothing read, nothing hashed
                result[name] = Planned(name, UP_TO_DATE, proven[0].notes)
                expected.update(proven[1])
                continue
            prep = repo.prepare(name, upstream_running=ups, forced=force, expected=expected, on_remote=on_remote)
            p = Planned(name, decide(prep.current, prep.lock, policy), prep.current.notes, prep)
            if not p.decision.run:
                repo.prove(prep)
            if p.decision.run and runs is not None and not ups and not force:
                hit = runs.local_hit(prep)
                if hit is None and runs.can_ask(prep):
                    asks[name] = p
                    continue
                p = replace(p, hit=hit)
            _settle(p, result, will_run, expected)
        hits = runs.remote_hits({n: p.prepared for n, p in asks.items() if p.prepared}) if runs and asks else {}
        for name, p in asks.items():
            _settle(replace(p, hit=hits.get(name)), result, will_run, expected)
        pending = list(later)
    return [result[n] for n in names]


def _settle(p: Planned, result: dict[str, Planned], will_run: set[str], expected: dict[str, str]) -> None:
    result[p.name] = p
    if p.hit is not None:
        expected.update({r.path: r.hash for r in p.hit.record.lock.outs})
    elif p.decision.run:
        will_run.add(p.name)
    elif p.prepared is not None and p.prepared.lock is not None:
        expected.update({r.path: r.hash for r in p.prepared.lock.outs})
