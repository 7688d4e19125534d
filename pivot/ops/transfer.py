"""push, fetch and pull: cache objects between the local cache and a remote."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pivot.workspace import Workspace

if TYPE_CHECKING:
    from pivot.checkout import CheckoutResult
    from pivot.records import NeededOutput
    from pivot.remote import Storage, Transfer


@dataclass(frozen=True)
class Selection:
    """Which lock files' outputs: `stages` (default: all) of the workspace, and with the flags
    those of every local branch or every commit too."""

    stages: tuple[str, ...] = ()
    remote: str | None = None
    jobs: int | None = None
    all_branches: bool = False
    all_commits: bool = False


@dataclass(frozen=True)
class Moved:
    remote: str  # the remote's name
    result: Transfer
    run_records: int = 0  # run records uploaded (push --run-cache)


@dataclass(frozen=True)
class Pulled:
    fetches: list[Moved]  # a second fetch follows when the first checkout evicted damaged objects
    checkout: CheckoutResult  # the last checkout
    evicted: list[str] = field(default_factory=list)  # the first checkout's warnings (damaged objects taken out)


def _open(ws: Workspace, sel: Selection) -> tuple[Storage, int]:
    from pivot.remote import default_jobs  # lazy: start-up

    spec = ws.remote(sel.remote)
    jobs = sel.jobs or default_jobs(spec.url)
    return ws.storage(spec, jobs), jobs


def _needed(ws: Workspace, sel: Selection) -> dict[str, NeededOutput]:
    from pivot.ops.needed import needed_outputs  # lazy: start-up

    return needed_outputs(ws.project, sel.stages, sel.all_branches, sel.all_commits)


def push(sel: Selection, run_cache: bool = True) -> Moved:
    """Upload the cache objects the lock files need and the remote lacks; with `run_cache`, then
    the run records of those outputs (docs/run-cache.md)."""
    from pivot.remote import push as push_objects  # lazy: start-up

    with Workspace.find() as ws:
        storage, jobs = _open(ws, sel)
        outputs = _needed(ws, sel)
        result = push_objects(storage, ws.cache, outputs, jobs)
        if not run_cache:
            return Moved(storage.name, result)
        from pivot.runcache import push_records  # lazy: push --run-cache only

        failed = [*result.missing, *result.corrupt]
        return Moved(storage.name, result, push_records(storage, ws.cache.dir, outputs, failed, jobs))


def _fetch(ws: Workspace, sel: Selection) -> Moved:
    from pivot.remote import fetch as fetch_objects  # lazy: start-up

    storage, jobs = _open(ws, sel)
    if sel.stages:  # paths inside outputs too (pivot/ops/subtree.py)
        from pivot.ops.subtree import fetch_subtrees, merged, split_targets  # lazy: start-up

        stages, subtrees = split_targets(ws.project, sel.stages)
        if subtrees:
            with ws.lock("fetch"):
                done = fetch_subtrees(storage, ws.cache, subtrees, jobs)
                if stages:
                    done.append(fetch_objects(storage, ws.cache, _needed(ws, replace(sel, stages=stages)), jobs))
            return Moved(storage.name, merged(done))
    outputs = _needed(ws, sel)
    with ws.lock("fetch"):
        return Moved(storage.name, fetch_objects(storage, ws.cache, outputs, jobs))


def fetch(sel: Selection) -> Moved:
    """Download the cache objects the lock files need and the cache lacks (verified)."""
    with Workspace.find() as ws:
        return _fetch(ws, sel)


def pull(sel: Selection, force: bool) -> Pulled:
    """fetch, then checkout. A checkout that took damaged objects out of the cache fetches good
    copies and checks out again."""
    fetches = [fetch(sel)]
    done = _checkout(sel, force)
    if not done.warnings:
        return Pulled(fetches, done)
    fetches.append(fetch(sel))
    return Pulled(fetches, _checkout(sel, force), done.warnings)


def _checkout(sel: Selection, force: bool) -> CheckoutResult:
    from pivot.ops.checkout import checkout_outputs  # lazy: loads the pipeline

    if sel.stages:  # paths inside outputs: only their files are placed (pivot/ops/subtree.py)
        from pivot.ops.subtree import place_subtrees, split_targets  # lazy: start-up

        with Workspace.find() as ws:
            stages, subtrees = split_targets(ws.project, sel.stages)
            if subtrees:
                with ws.lock("pull"):
                    placed = place_subtrees(ws.project.root, ws.cache, subtrees, force)
                if stages:
                    rest = checkout_outputs(stages, force, action="pull")
                    for name in ("restored", "missing", "kept", "warnings", "saved"):
                        getattr(placed, name).extend(getattr(rest, name))
                return placed
    return checkout_outputs(sel.stages, force, action="pull")


def pull_totals(pulled: Pulled) -> dict[str, Any]:
    """A pull's `--json` totals: its fetches added up, and how many outputs were restored."""
    totals: dict[str, Any] = {}
    for moved in pulled.fetches:
        for key, value in moved.result.totals().items():
            totals[key] = value if key == "remote" or key not in totals else totals[key] + value
    totals["seconds"] = round(totals["seconds"], 3)
    last = pulled.fetches[-1].result  # a second fetch asks again: what is still missing is its count
    totals["missing"], totals["corrupt"] = len(last.missing), len(last.corrupt)
    totals["failed"] = totals["missing"] + totals["corrupt"]
    totals["restored"] = len(pulled.checkout.restored)
    return totals


def human(n: float) -> str:
    """A byte count for people (1.2 MB)."""
    from pivot.remote import human as render  # lazy: start-up

    return render(n)


def summarize(paths: Iterable[str], limit: int = 5) -> str:
    """A few paths, then how many more."""
    from pivot.remote import summarize as render  # lazy: start-up

    return render(paths, limit)
