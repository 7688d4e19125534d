"""The run cache: a stale stage whose exact inputs ran before (here, or on any clone that pushed to
the remote) is restored from that run's record instead of running again. See docs/run-cache.md.

`RunCache` answers "has this stage, as prepared now, been run before?": locally
(`.pivot/cache/runs/`), then on the remote (pivot/remote/runs.py), many stages in one batch.
A record is used only when it decodes, checks, belongs to the stage as prepared now (code,
params, deps and outputs), and every object it names is in the cache or arrives verified from the
remote; anything else is a warning and the stage runs. `push_records` and `gc_records` are the
hooks of `pivot push` and `pivot gc`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pivot import atomic
from pivot.errors import BadRunRecord, PivotError
from pivot.runrecord import LocalRuns, RunRecord, decode, relpath, run_key

if TYPE_CHECKING:
    from pathlib import Path

    from pivot.fresh import Source
    from pivot.lock import StageLock
    from pivot.records import NeededOutput
    from pivot.remote import Storage
    from pivot.remote.runs import RunPacks
    from pivot.repo import Prepared, Repo
    from pivot.reporter import Reporter
    from pivot.stage import Stage

# Seconds a listing of the remote's run packs is used again: stage after stage of a run asks the
# remote, and one LIST request each was most of a short stage's cost on a cluster. A record
# pushed by someone else within that time is missed, and the stage runs instead.
LISTING_AGE = 1.0


@dataclass(frozen=True)
class Hit:
    """A usable record for a stage: `where` is "local", or the remote's name."""

    record: RunRecord
    where: str
    remote: bool = False

    @property
    def label(self) -> str:
        return f"remote '{self.where}'" if self.remote else "local"


def eligible(stage: Stage) -> bool:
    """Whether a stage's result is a function of its inputs as far as Pivot can tell: not opted
    out (`@stage(run_cache=False)`), and no IncrementalOut (which starts from its last version)."""
    return stage.run_cache and not any(o.incremental for o in stage.outs)


def key_of(prep: Prepared) -> str | None:
    """The run key of a stage as prepared (None: not eligible, or a dep is missing)."""
    if not eligible(prep.stage):
        return None
    deps = prep.current.deps
    if any(h is None for h in deps.values()):
        return None
    outs = [(o.path, str(o.kind), o.cached) for o in prep.stage.outs]
    return run_key(prep.current.fingerprint, prep.current.params, {p: h for p, h in deps.items() if h}, outs)


def lookup_key(prep: Prepared) -> str | None:
    """The key to look a stale stage up by, or None when a record is not to be used: not
    eligible; its lock already is the run of these inputs (it is stale for its outputs alone,
    which the cache restores when it can; else the stage runs); or its lock file is unreadable
    (the stage runs and rewrites it, as without a run cache)."""
    if prep.current.lock_problem or (prep.lock is not None and _mismatch(prep.lock, prep) is None):
        return None
    return key_of(prep)


def _mismatch(lock: StageLock, prep: Prepared) -> str | None:
    """Why `lock` is not a run of the stage as prepared now, or None."""
    cur = prep.current
    if lock.fingerprint != cur.fingerprint or lock.params != cur.params:
        return "its code or params are not the stage's"
    if {r.path: r.hash for r in lock.deps} != cur.deps:
        return "its deps are not the stage's"
    declared = {o.path: str(o.kind) for o in prep.stage.outs}
    if {r.path: str(r.kind) for r in lock.outs} != declared:
        return "its outputs are not the stage's"
    return None


def make_record(repo: Repo, prep: Prepared, lock: StageLock) -> RunRecord | None:
    """The record of a run that just wrote `lock`, or None when it is not to be recorded."""
    key = key_of(prep)
    if key is None:
        return None
    metrics: dict[str, str] = {}
    for rec in lock.outs:
        if not rec.cached:
            try:
                metrics[rec.path] = (repo.root / rec.path).read_bytes().decode()
            except (OSError, UnicodeDecodeError):
                return None  # not recordable: a restore could not give it back
    return RunRecord(key, prep.stage.name, lock, metrics)


@dataclass
class RunCache:
    """Lookups for one run or status. `source`: the remote to ask too (None: local only)."""

    repo: Repo
    reporter: Reporter
    source: Source | None = None
    storage: Storage | None = None
    asked: set[str] = field(default_factory=set)  # keys the remote was asked about
    found: dict[str, bytes] = field(default_factory=dict)  # what it answered
    refused: set[str] = field(default_factory=set)  # keys warned about: never tried again
    missing: set[str] = field(default_factory=set)  # keys with no local record when looked up
    _packs: RunPacks | None = None  # the remote's run packs as last listed, used again for LISTING_AGE

    def __post_init__(self) -> None:
        self.local = LocalRuns(self.repo.cache.dir)

    # -- writing ------------------------------------------------------------
    def save(self, prep: Prepared, lock: StageLock) -> None:
        """Record a successful run (after its outputs are cached and its lock written)."""
        record = make_record(self.repo, prep, lock)
        if record is not None:
            new = record.key in self.missing
            self.missing.discard(record.key)  # kept only until its record is written
            self.local.put(record.key, record.encode(), new=new)

    # -- looking up -----------------------------------------------------------
    def _refuse(self, key: str, prep: Prepared, where: str, why: str) -> None:
        if key not in self.refused:
            self.refused.add(key)
            self.reporter.warning(f"run record {where} for stage '{prep.stage.name}' is refused ({why}); "
                                  "the stage runs")

    def _usable(self, key: str, data: bytes, prep: Prepared, source: str | None, where: str) -> Hit | None:
        """A hit from a record's bytes (`source`: the remote's name, None: local), or None."""
        try:
            record = decode(data, key)
            why = _mismatch(record.lock, prep)
            if why is not None:
                raise BadRunRecord(why)
        except BadRunRecord as exc:
            self._refuse(key, prep, where, str(exc))
            return None
        return Hit(record, source or "local", source is not None)

    def local_hit(self, prep: Prepared) -> Hit | None:
        """A usable local record whose objects are all in the local cache (or, with a remote,
        a usable local record at all: its objects may come from there)."""
        key = lookup_key(prep)
        data = self.local.get(key) if key is not None and key not in self.refused else None
        if key is None or data is None:
            if key is not None and key not in self.refused:
                self.missing.add(key)  # nor written since: `save` need not look again
            return None
        where = os.path.relpath(self.repo.cache.dir / relpath(key), self.repo.root)
        hit = self._usable(key, data, prep, None, where)
        if hit is None or self.source is not None:
            return hit
        lacking = [r for r in hit.record.lock.outs if r.cached and not self.repo.in_cache(r)]
        if lacking:
            self._refuse(key, prep, where, f"'{lacking[0].path}' ({lacking[0].hash}) is not in the cache")
            return None
        return hit

    def _open(self, src: Source) -> Storage:
        if self.storage is None:
            self.storage = src.open()
        return self.storage

    def can_ask(self, prep: Prepared) -> bool:
        key = lookup_key(prep)
        return self.source is not None and key is not None and key not in self.asked and key not in self.refused

    def remote_hits(self, preps: dict[str, Prepared]) -> dict[str, Hit]:
        """One batched lookup on the remote for stages name -> prepared; a failure of the
        remote is a warning (the stages run)."""
        src = self.source
        keys = {name: k for name, p in preps.items() if (k := lookup_key(p)) is not None}
        if src is None or not keys:
            return {}
        todo = set(keys.values()) - self.asked
        import time  # lazy: only when a remote is asked

        started = time.monotonic()
        opening = 0.0
        try:
            if todo:
                from pivot.remote.runs import lookup  # lazy: the remote code only when asked

                storage = self._open(src)
                opening = time.monotonic() - started
                refused: list[str] = []
                if self._packs is None:
                    from pivot.remote.runs import RunPacks  # lazy: as above

                    self._packs = RunPacks(storage, key_lists(self.repo.cache.dir), src.jobs())
                self.found.update(lookup(storage, todo, src.jobs(), key_lists(self.repo.cache.dir), refused,
                                         self._packs, LISTING_AGE))
                for line in refused:
                    self.reporter.warning(line)
        except PivotError as exc:
            self.reporter.warning(f"{exc}; looking up run records failed, stages run instead")
            self.source = None
            return {}
        finally:
            self.asked.update(todo)
        hits: dict[str, Hit] = {}
        for name, key in keys.items():
            data = self.found.get(key)
            if data is not None and key not in self.refused:
                hit = self._usable(key, data, preps[name], src.name, f"{relpath(key)} on remote '{src.name}'")
                if hit is not None:
                    hits[name] = hit
        self.reporter.run_cache_lookup(len(todo), len(hits), src.name, time.monotonic() - started - opening, opening)
        return hits

    def find(self, prep: Prepared) -> Hit | None:
        """A usable record for a stale stage as the run reaches it: local, then the remote."""
        hit = self.local_hit(prep)
        if hit is None and self.source is not None and (self.can_ask(prep) or lookup_key(prep) in self.found):
            hit = self.remote_hits({prep.stage.name: prep}).get(prep.stage.name)
        return hit

    # -- restoring -------------------------------------------------------------
    def fetch_objects(self, hits: dict[str, Hit]) -> dict[str, Hit]:
        """The hits whose objects are all in the local cache, fetching what is missing from the
        remote in one verified transfer; the others are warned about (their stages run)."""
        wanted = {name: [r for r in h.record.lock.outs if r.cached and not self.repo.in_cache(r)]
                  for name, h in hits.items()}
        records = [r for recs in wanted.values() for r in recs]
        if records and self.source is not None:
            from pivot.fresh import fetch_records  # lazy: the remote code only when needed

            try:
                storage = self._open(self.source)
                stages = {r.path: name for name, recs in wanted.items() for r in recs}
                fetch_records(storage, self.repo, records, stages, self.source.jobs())
            except PivotError as exc:
                self.reporter.warning(f"{exc}; stages whose outputs did not arrive run instead")
        usable: dict[str, Hit] = {}
        for name, hit in hits.items():
            lacking = [r for r in wanted[name] if not self.repo.in_cache(r)]
            if lacking:
                where = f"'{self.source.name}'" if self.source is not None else "no remote is configured"
                self.refused.add(hit.record.key)
                self.reporter.warning(
                    f"run record for stage '{name}' ({hit.label}) names '{lacking[0].path}' ({lacking[0].hash}), "
                    f"which is neither in the cache nor on the remote {where}; the stage runs")
            else:
                usable[name] = hit
        return usable

    def restore(self, name: str, hit: Hit) -> list[str]:
        """Put a hit's outputs in the workspace and write its lock; returns the paths restored."""
        record = hit.record
        for rec in record.lock.outs:
            if rec.cached:
                note = self.repo.restore(rec)
                if note:
                    self.reporter.note(f"{name}: {note}")
        with atomic.interrupts_deferred():  # metrics and lock together, never one without the other
            for path, text in record.metrics.items():
                self.repo.check_confined(path)
                atomic.write_bytes(self.repo.root / path, text.encode())
            self.repo.write_lock(name, record.lock)
        return [r.path for r in record.lock.outs]


# -- push and gc ------------------------------------------------------------------
def _readable(cache_dir: Path) -> dict[str, RunRecord]:
    """The local records that decode (a bad one is left for a run to warn about)."""
    runs = LocalRuns(cache_dir)
    found: dict[str, RunRecord] = {}
    for key in runs.all_keys():
        data = runs.get(key)
        try:
            if data is not None:
                found[key] = decode(data, key)
        except BadRunRecord:
            continue
    return found


def push_records(storage: Storage, cache_dir: Path, outputs: dict[str, NeededOutput], failed: Iterable[str],
                 jobs: int) -> int:
    """Upload the local records whose cached outputs are all among the pushed `outputs` (none of
    which `failed`); returns how many the remote lacked."""
    from pivot.remote.runs import upload  # lazy: push only

    bad = set(failed)
    mine = {k: r for k, r in _readable(cache_dir).items()
            if r.objects and all(d in outputs and d not in bad for d in r.objects)}
    return upload(storage, {k: r.encode() for k, r in mine.items()}, jobs, key_lists(cache_dir))


def _unkept(records: dict[str, RunRecord], outputs: dict[str, NeededOutput]) -> list[str]:
    return sorted(k for k, r in records.items() if not all(d in outputs for d in r.objects))


def key_lists(cache_dir: Path) -> Path:
    """Where the remote's run-pack indexes are kept once read (immutable, named by content)."""
    return cache_dir / "tmp" / "runkeys"


@dataclass
class RemoteRecords:
    """What gc does to a remote's run records: the keys to drop, and how many stay."""

    drop: list[str] = field(default_factory=list)
    kept: int = 0


def plan_remote_records(storage: Storage, cache_dir: Path, outputs: dict[str, NeededOutput],
                        jobs: int) -> RemoteRecords:
    """The remote's records whose outputs gc does not keep go; an unreadable one stays."""
    from pivot.remote.runs import read_all  # lazy: gc --remote only

    found: dict[str, RunRecord] = {}
    data = read_all(storage, jobs, key_lists(cache_dir))
    for key, blob in data.items():
        try:
            found[key] = decode(blob, key)
        except BadRunRecord:
            continue
    drop = _unkept(found, outputs)
    return RemoteRecords(drop, len(data) - len(drop))


def drop_remote_records(storage: Storage, cache_dir: Path, plan: RemoteRecords, jobs: int) -> None:
    from pivot.remote.runs import delete  # lazy: gc --remote only

    delete(storage, plan.drop, jobs, key_lists(cache_dir))


def gc_records(cache_dir: Path, outputs: dict[str, NeededOutput], dry_run: bool) -> tuple[int, int]:
    """Remove the local records whose outputs gc does not keep; returns (removed, kept). An
    unreadable local record goes too."""
    runs = LocalRuns(cache_dir)
    keys = set(runs.all_keys())
    readable = _readable(cache_dir)
    drop = _unkept(readable, outputs) + sorted(keys - set(readable))
    if not dry_run:
        for key in drop:
            runs.remove(key)
    return len(drop), len(keys) - len(drop)
