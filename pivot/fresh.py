"""Outputs a fresh clone lacks: locked outputs missing from the workspace and the local cache,
and which of them a remote holds, so that `pivot status` says "run 'pivot pull'" and `pivot run`
fetches them instead of running their stages again.

The remote is asked in one batched existence query (`remote.missing_on_remote`), or, when only
a hint is wanted, its local index (`RemoteIndex.remembered`) answers without the network; a
folder remote has no index and is asked directly (it is a local disk)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pivot.records import NeededOutput, PathRecord

if TYPE_CHECKING:
    from pivot.remote import Storage, Transfer
    from pivot.repo import Repo


@dataclass(frozen=True)
class Source:
    """The remote a run or a status may restore outputs from, opened only when needed."""

    name: str
    open: Callable[[], Storage]
    jobs: Callable[[], int]  # how many transfers at once (the remote's default)
    ask: bool = True  # False: the local index answers when there is one (no network)


def candidates(repo: Repo, names: Iterable[str]) -> dict[str, NeededOutput]:
    """Locked cached outputs of `names` missing from the workspace and not in the local cache."""
    wanted: dict[str, NeededOutput] = {}
    for name in names:
        if repo.lock_problem(name):
            continue
        lock = repo.read_lock(name)
        for rec in lock.outs if lock is not None else ():
            if rec.cached and not os.path.lexists(repo.root / rec.path) and not repo.in_cache(rec):
                wanted.setdefault(rec.hash, NeededOutput(rec.hash, rec.path, name, rec.is_dir, "workspace"))
    return wanted


def held(storage: Storage, repo: Repo, wanted: dict[str, NeededOutput], jobs: int, ask: bool) -> frozenset[str]:
    """The hashes of `wanted` outputs the remote holds completely (a directory: its manifest and
    every file it lists)."""
    if not wanted:
        return frozenset()
    if not ask and storage.index is not None:
        known = storage.index.remembered()  # a directory is complete once its manifest is there
        return frozenset(d for d in wanted if d in known)
    from pivot.remote import missing_on_remote  # lazy: the remote code only when a clone lacks outputs

    lacking = missing_on_remote(storage, repo.cache, wanted, jobs)
    incomplete = set(lacking.values())
    # (what it found present is remembered in the remote's index by missing_on_remote)
    return frozenset(d for d, need in wanted.items() if d not in lacking and need.path not in incomplete)


def fetch_records(storage: Storage, repo: Repo, records: Iterable[PathRecord], stages: dict[str, str],
                  jobs: int) -> Transfer:
    """One batched, verified fetch of the objects of `records` into the local cache."""
    from pivot.remote import fetch  # lazy: the remote code only when a clone lacks outputs

    outputs = {r.hash: NeededOutput(r.hash, r.path, stages.get(r.path, ""), r.is_dir, "workspace") for r in records}
    return fetch(storage, repo.cache, outputs, jobs)
