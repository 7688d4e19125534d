"""Chains of stages a remote executor may run on one worker in one round trip (issue #21).

A stage on a cluster pays a round trip through the scheduler. In a chain of short stages (each
the only stage of the run that needs the one before it), the runner sends a stage together with
the stages after it: the worker runs them one after another, each with the previous one's
outputs, and answers for all of them at once.

Those followers run *speculatively*: the runner decides nothing for them early. When a follower
becomes ready, the runner prepares and decides it as always (up to date? a run record to restore
from?), and only if it must run and the executor holds an answer for exactly the same inputs
(code, params, deps' hashes) is that answer used instead of a new round trip. Otherwise the
answer is dropped: nothing of it reached the workspace, the locks or the run cache (objects it
uploaded are named by their hash and harmless). So locks, the run cache, failure reporting and
--keep-going are what they are without chains.

A stage follows another only when the run cannot do without running it whatever the other
produces (no lock, a lock problem, code or params changed, or --force), so that speculation is
rarely wasted; and only when it is simple to send ahead: not exclusive, no IncrementalOut, and
every dep either an output of the stage before it exactly or a file that no stage of the run
changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pivot.executor import OutSpec, StageTask
from pivot.layout import stage_file
from pivot.limits import DEFAULT
from pivot.records import PathRecord

if TYPE_CHECKING:
    from pivot.landing import Landing
    from pivot.repo import Prepared, Repo

MAX_FOLLOWERS = 15  # a chain's first stage reports when the whole chain is back: keep it short


def followers(repo: Repo, landing: Landing, state: dict[str, str], first: str, force: bool,
              logs_dir: Path) -> tuple[StageTask, ...]:
    """The tasks of the stages that may run on the same worker right after `first`, in order
    (a dep record with an empty hash: an output of the stage before). `state`: the run's stages
    and their state."""
    graph = repo.graph
    chain: list[StageTask] = []
    current = first
    while len(chain) < MAX_FOLLOWERS:
        after = [d for d in graph.downstream[current] if d in state]
        if len(after) != 1:
            return tuple(chain)
        name = after[0]
        stage = graph.stages[name]
        if state[name] != "pending" or [u for u in graph.upstream[name] if u in state] != [current] \
                or stage.exclusive or stage.limits != DEFAULT or any(o.incremental for o in stage.outs):
            return tuple(chain)
        deps = _deps(repo, landing, name, current, force)
        if deps is None:
            return tuple(chain)
        prep, records = deps
        manifests = tuple((h.hash, h.manifest) for h in prep.dep_hashes.values() if h is not None and h.manifest)
        chain.append(StageTask(name, stage.func, prep.params, repo.root,
                               tuple(OutSpec(o.path, o.kind, o.cached) for o in stage.outs), repo.cache.dir,
                               repo.cache.link, logs_dir / stage_file(name, ".log"), fingerprint=prep.fingerprint,
                               deps=records, manifests=manifests))
        current = name
    return tuple(chain)


def _deps(repo: Repo, landing: Landing, name: str, before: str, force: bool
          ) -> tuple[Prepared, tuple[PathRecord, ...]] | None:
    """`name` prepared now and its dep records (the outputs of `before` with an empty hash), or
    None when it may not follow `before`: it might turn out up to date, or a dep is not simple."""
    produced = set(repo.graph.outs[before])
    prep = landing.prepare(name, force)
    lock = prep.lock
    certain = force or lock is None or prep.current.lock_problem is not None \
        or prep.current.fingerprint != lock.fingerprint or prep.current.params != lock.params
    if not certain:
        return None
    records = []
    for dep, h in prep.dep_hashes.items():
        if dep in produced:
            records.append(PathRecord(dep, "", False))
        elif h is None or any(dep.startswith(p + "/") or p.startswith(dep + "/") for p in produced):
            return None
        else:
            records.append(PathRecord(dep, h.hash, h.is_dir))
    return prep, tuple(records)
