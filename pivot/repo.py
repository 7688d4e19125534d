"""A loaded project: its stages, graph, params, cache and state, and the per-stage current state."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pivot import lock as lockfile
from pivot import params as params_mod
from pivot.cache import Cache, is_temporary
from pivot.confine import Confinement
from pivot.errors import Escaped, LockError
from pivot.fingerprint import Fingerprint, Fingerprinter
from pivot.graph import Graph, build
from pivot.hashing import Hasher, changed_entries, hash_bytes, parse_manifest
from pivot.listings import Listings
from pivot.lock import StageLock
from pivot.project import Project, load_project
from pivot.records import DirEntry, PathHash, PathRecord, assemble
from pivot.stage import Stage
from pivot.state import State
from pivot.status import Current, as_locked
from pivot.sweep import load_stages
from pivot.uptodate import UpToDate


@dataclass
class Prepared:
    """Everything computed about one stage before deciding."""

    stage: Stage
    fingerprint: Fingerprint
    params: Any  # the model instance, or None
    current: Current
    lock: StageLock | None
    dep_hashes: dict[str, PathHash | None]
    # Outputs changed in place through a hardlink/symlink into the cache, which damaged their
    # locked cache objects: output path -> [(workspace file, object hash)].
    damaged: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


@contextlib.contextmanager
def gc_paused(keep: bool = False) -> Iterator[None]:
    """Deciding thousands of stages keeps every decision alive until the end, so the cyclic
    garbage collector would traverse an ever larger heap again and again for next to no garbage
    (a third of a no-op status of 10,000 stages): it waits until the block ends. `keep`: what
    the block made and still holds lives as long as the process (a plan), so the collector
    leaves it alone from then on (gc.freeze) instead of traversing it once more."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if keep:
            gc.freeze()
        if was:
            gc.enable()


def _declared_outs(stage: Stage) -> tuple[tuple[str, str], ...]:
    """(path, kind) of each declared output, as a proof of the stage holds them (pivot/uptodate.py)."""
    return tuple((o.path, str(o.kind)) for o in stage.outs)


_NONE: frozenset[str] = frozenset()  # one empty set for every stage (frozenset(set()) makes a new one)


@dataclass(frozen=True)
class OrphanLock:
    """A lock file whose stage is not in the pipeline (renamed or removed)."""

    stage: str
    path: str  # relative to the project root: .pivot/stages/<stage>.lock

    @property
    def why(self) -> str:
        return f"no stage '{self.stage}' in the pipeline"


class Repo:
    def __init__(self, project: Project) -> None:
        self.project = project
        self.root = project.root
        self.state = State(project.state_path)
        self.hasher = Hasher(self.root, self.state)
        self.cache = Cache(project.cache_dir, project.config.link)
        self.fingerprinter = Fingerprinter(self.root, self.state)
        self.listings = Listings(self.state)
        os.chdir(self.root)
        with gc_paused(keep=True):  # the pipeline lives as long as the process
            self.graph: Graph = build(load_stages(self.root, project.config.pipeline), self.root, self.listings)
        self.stages = list(self.graph.stages.values())  # paths resolved
        self.overrides = params_mod.load_overrides(self.root)
        params_mod.check_sections(self.overrides, self.stages)
        self._params: dict[str, tuple[Any, dict[str, Any] | None]] = {}
        self._locks: dict[str, StageLock | None] = {}
        self._lock_problems: dict[str, str | None] = {}
        self.stages_dir = project.stages_dir
        self.lock_reader = lockfile.LockReader(self.stages_dir, self.state)
        self.uptodate = UpToDate(self.root, self.lock_reader.stat, self.state)
        self._fingerprints: dict[str, Fingerprint] = {}
        self._assumed: set[str] = set()  # stages planned with a lock other than their file's (`assume_lock`)
        self._preloaded = False

    @classmethod
    def load(cls, start: Path | None = None) -> Repo:
        return cls(load_project(start))

    def close(self) -> None:
        self.state.close()

    def remember(self) -> None:
        """Write the proofs of up-to-date stages and the folders' listings this command made."""
        self.uptodate.save(self.graph.stages)
        self.listings.save()

    def commit(self) -> None:
        """Write what this process remembered (`remember`, and the state's rows)."""
        self.remember()
        self.state.commit()

    # -- params ----------------------------------------------------------
    def use_overrides(self, overrides: dict[str, Any]) -> None:
        """Plan and run with these params.yaml values from now on (`run -S`)."""
        params_mod.check_sections(overrides, self.stages)
        self.overrides = overrides
        self._params.clear()

    def check_params(self, names: list[str]) -> None:
        """Resolve every selected stage's params now, so a bad params.yaml fails before anything runs."""
        for n in names:
            self.params_of(n)

    def params_of(self, name: str) -> tuple[Any, dict[str, Any] | None]:
        if name not in self._params:
            s = self.graph.stages[name]
            if s.params is None:
                self._params[name] = (None, None)
            else:
                inst = params_mod.resolve(s, self.overrides)
                self._params[name] = (inst, params_mod.as_record(inst))
        return self._params[name]

    # -- state of one stage ------------------------------------------------
    def read_lock(self, name: str) -> StageLock | None:
        if name not in self._locks:
            self._locks[name] = self.lock_reader.read(name)
        return self._locks[name]

    def lock_problem(self, name: str) -> str | None:
        """Why stage `name`'s lock file cannot be read (`lock file .pivot/stages/X.lock is
        unreadable (line 2: ...)`), or None when it can, or there is none. A lock is derived
        data: an unreadable one makes its stage stale, and running the stage rewrites it."""
        if name not in self._lock_problems:
            try:
                self.read_lock(name)
                self._lock_problems[name] = None
            except LockError as exc:
                self._lock_problems[name] = f"lock file {self.lock_file(name)} is unreadable ({exc.detail})"
        return self._lock_problems[name]

    def lock_file(self, name: str) -> str:
        """Stage `name`'s lock file, relative to the project root (`.pivot/stages/X.lock`)."""
        return Path(os.path.relpath(lockfile.lock_path(self.stages_dir, name), self.root)).as_posix()

    def orphan_locks(self) -> list[OrphanLock]:
        """Lock files of stages the pipeline no longer defines (renamed or removed)."""
        known = self.graph.stages
        names = self.listings.answer("orphan locks", str(self.stages_dir),
                                     lambda: lockfile.unknown_locks(self.stages_dir, known),
                                     hash_bytes("\0".join(known).encode()))
        return [OrphanLock(name, self.lock_file(name)) for name in names]

    def remove_orphan(self, orphan: OrphanLock) -> None:
        (self.root / orphan.path).unlink(missing_ok=True)

    def assume_lock(self, name: str, lock: StageLock) -> None:
        """Plan from now on as if `lock` were the stage's lock file (the pre-commit check asks
        "what if the lock files left unstaged were added?")."""
        self._locks[name] = lock
        self._lock_problems[name] = None
        self._assumed.add(name)  # the lock file no longer vouches for it: no proof is used or taken

    def write_lock(self, name: str, lock: StageLock) -> None:
        new = self.lock_reader.stat(name) is None  # as this command found it (one stat per command)
        self.lock_reader.wrote(name, lock, lockfile.write(self.stages_dir, name, lock, new))
        self._locks[name] = lock
        self._lock_problems[name] = None

    def in_cache(self, rec: PathRecord) -> bool:
        """Whether locked output or tracked data `rec` could be restored from the cache: its
        object, or its manifest and every object it names (remembered while the cache folders
        holding them are unchanged: `Cache.holds_all`)."""
        if not rec.is_dir:
            return self.cache.has(rec.hash)
        try:
            return self.cache.holds_all(rec.hash, self.state, rec.path)
        except Exception:  # a missing or unreadable manifest: nothing of it can be restored
            return False

    def remember_cached(self) -> None:
        """Take the cache memo (`Cache.holds_all`) of each locked folder output that this process
        re-read because its walk differed from the folder memo (as the first status after a run
        does), so that the first status after one of its files is edited need not list the cache.
        Costs nothing on a no-op status, nor on one that hashes a folder with nothing remembered
        of it (the state deleted: that one is slow enough); skipped while the cache changed too
        lately."""
        fresh = set(self.hasher.refreshed)
        recs = [r for lock in self._locks.values() if lock is not None for r in lock.outs
                if r.is_dir and r.cached and r.path in fresh]
        if recs and not self.cache.changed_lately():
            for rec in recs:
                self.in_cache(rec)

    def fingerprint(self, name: str) -> Fingerprint:
        """Stage `name`'s code fingerprint (computed once per process)."""
        fp = self._fingerprints.get(name)
        if fp is None:
            s = self.graph.stages[name]
            fp = self._fingerprints[name] = self.fingerprinter.fingerprint(s.func, s.params)
        return fp

    def proven(self, name: str) -> tuple[Fingerprint, dict[str, str]] | None:
        """When stage `name` is as it was when last found up to date (pivot/uptodate.py): its
        fingerprint and the locked hash of each output. None: decide it in full (`prepare`)."""
        if name in self._assumed or not self.uptodate.has(name):
            return None  # no proof: not fingerprinted here (a first run starts its workers first)
        fp = self.fingerprint(name)
        held = self.uptodate.holds(name, self.graph.deps[name], _declared_outs(self.graph.stages[name]), fp.digest,
                                   self.params_of(name)[1])
        return None if held is None else (fp, held)

    def prove(self, prep: Prepared) -> None:
        """Remember why a stage found as locked is (pivot/uptodate.py), when every stat that
        decided it was trusted: its lock's, and each dep's and output's, whose hash (not one an
        upstream stage's lock stood in for) is the locked one."""
        name, cur, lock = prep.stage.name, prep.current, prep.lock
        lock_key = self.lock_reader.trusted.get(name)
        if lock is None or lock_key is None or name in self._assumed or not as_locked(cur, lock):
            return
        deps = self.graph.deps[name]
        if any(h is None or h.hash != cur.deps[d] for d, h in prep.dep_hashes.items()):
            return
        keys = tuple(k for p in (*deps, *self.graph.outs[name]) if (k := self.hasher.trusted_key(p)) is not None)
        if len(keys) != len(deps) + len(self.graph.outs[name]):
            return  # a folder, or a file changed too lately to be trusted
        self.uptodate.remember(name, lock_key, deps, _declared_outs(prep.stage), cur.fingerprint, cur.params, keys,
                               tuple(cur.outs[o.path][1] or "" for o in prep.stage.outs))

    def prepare(
        self,
        name: str,
        upstream_running: tuple[str, ...] = (),
        forced: bool = False,
        expected: dict[str, str] | None = None,
        on_remote: frozenset[str] = frozenset(),
    ) -> Prepared:
        """The current state of stage `name`. `on_remote`: hashes of locked outputs a remote is
        known to hold (a missing output whose object is there is restorable, not stale)."""
        if not self._preloaded:  # one query per 500 paths rather than one per path
            self._preloaded = True
            self.state.preload_files([p for n in self.graph.order for p in (*self.graph.deps[n], *self.graph.outs[n])])
        s = self.graph.stages[name]
        fp = self.fingerprint(name)
        inst, record = self.params_of(name)
        problem = self.lock_problem(name)
        lock = None if problem else self.read_lock(name)
        hash_path = self.hasher.hash_path
        dep_hashes = {d: hash_path(d) for d in self.graph.deps[name]}
        deps: dict[str, str | None] = {}
        for d, h in dep_hashes.items():
            # In a plan, an upstream stage that will be skipped restores its locked outputs first.
            deps[d] = (expected and expected.get(d)) or (h.hash if h else None)
        outs: dict[str, tuple[str, str | None]] = {}
        out_hashes: dict[str, PathHash | None] = {}
        for o in s.outs:
            h = out_hashes[o.path] = hash_path(o.path)
            outs[o.path] = (o.kind, h.hash if h else None)
        cached: set[str] = set()
        remote: set[str] = set()
        damaged: dict[str, list[tuple[str, str]]] = {}
        if lock is not None:
            for rec in lock.outs:
                if rec.path not in outs or outs[rec.path][1] == rec.hash or not rec.cached:
                    continue
                hit = self.damaged_objects(rec, out_hashes[rec.path])
                if hit:
                    damaged[rec.path] = hit
                elif self.in_cache(rec):
                    cached.add(rec.path)
                elif rec.hash in on_remote and outs[rec.path][1] is None:
                    remote.add(rec.path)
        cur = assemble(  # Current(...), three times faster
            Current,
            fingerprint=fp.digest,
            code_manifest=fp.manifest,
            params=record,
            deps=deps,
            outs=outs,
            cached=frozenset(cached) if cached else _NONE,
            on_remote=frozenset(remote) if remote else _NONE,
            damaged=frozenset(damaged) if damaged else _NONE,
            upstream_running=upstream_running,
            forced=forced,
            notes=fp.notes,
            lock_problem=problem,
        )
        return Prepared(s, fp, inst, cur, lock, dep_hashes, damaged)

    # -- outputs changed through a link into the cache ---------------------
    def damaged_objects(self, rec: PathRecord, current: PathHash | None) -> list[tuple[str, str]]:
        """The cache objects of locked output `rec` that its workspace copy changed in place.

        With cache.link hardlink or symlink, a workspace file *is* its cache object, so writing
        into it (as root, or after a chmod) changes the object under its old name. Restoring
        from such an object would hand back the edited content as if it were the locked one, so
        it must be recognised: the workspace differs from the lock, yet is the object itself.
        Returns [(workspace file, object hash)]; costs nothing unless the output differs."""
        if current is None or current.hash == rec.hash:
            return []
        if not rec.is_dir:
            return [(rec.path, rec.hash)] if not current.is_dir and self.cache.is_linked(rec.hash, rec.path) else []
        if not current.is_dir:
            return []
        try:
            mine, theirs = changed_entries(current.manifest or b"[]", self.cache.path(rec.hash).read_bytes())
        except Exception:  # no manifest here: nothing of it can be checked out anyway
            return []
        locked = {e.path: e.hash for e in theirs}
        hit = []
        for e in sorted(mine):  # only the files that differ, found without parsing both manifests
            was = locked.get(e.path)
            if was is not None and was != e.hash:
                path = f"{rec.path}/{e.path}"
                if self.cache.is_linked(was, path):
                    hit.append((path, was))
        return hit

    def evict_damaged(self, output: str, hit: list[tuple[str, str]]) -> str:
        """Take damaged objects out of the cache (the edited files stay in the workspace);
        returns a note for the user."""
        for path, digest in hit:
            self.cache.evict_damaged(digest, path)
        link = "symlink" if self.cache.link == "symlink" else "hardlink"
        what = f"'{hit[0][0]}'" if len(hit) == 1 else f"{len(hit)} files of '{output}'"
        return (f"{what} changed in place through a {link} into the cache, which damaged the cached "
                f"copy of the locked version; removed it from the cache (the changed content stays "
                f"in the workspace). 'pivot pull' gets it back from a remote, or run the stage again")

    # -- restoring ---------------------------------------------------------
    def keep_workspace_copy(self, path: str, current: PathHash | None,
                            locked: PathRecord | None = None) -> tuple[str, int] | None:
        """Store in the cache the workspace version of output `path` (hashed as `current`) when
        the cache lacks it, so that overwriting it loses nothing. The one place that saves a
        workspace copy: restoring an output and checking out with SAVE_TO_CACHE both call it.
        Returns (the version's hash, files newly stored), or None when nothing needed storing."""
        dest = self.root / path
        if current is None or dest.is_symlink() or self.cache.has(current.hash) or self.half_restored(current):
            return None
        if locked is not None and current.hash == locked.hash:
            return None
        if not current.is_dir:
            self.cache.add_file(dest)
            return current.hash, 1
        in_lock: set[tuple[str, str]] = set()
        if locked is not None and locked.is_dir:
            in_lock = {(e.path, e.hash) for e in self.cache.read_manifest(locked.hash)}
        stored = 0
        for e in _files(current):
            if (e.path, e.hash) not in in_lock and not self.cache.has(e.hash):
                self.cache.add_file(dest / e.path)
                stored += 1
        assert current.manifest is not None
        self.cache.add_bytes(current.manifest)
        return current.hash, stored

    def recoverable(self, current: PathHash) -> bool:
        """Whether the workspace version `current` could be brought back from the cache after
        overwriting it. Pivot's own temporaries (left by a killed restore) do not count: they
        hold no one's work."""
        if self.cache.has(current.hash):
            return True
        files = [e for e in _files(current) if not is_temporary(e.path)]
        return current.is_dir and current.manifest is not None and not self.cache.missing(e.hash for e in files)

    def half_restored(self, current: PathHash) -> bool:
        """Whether folder version `current` is what a killed restore left: files that are all in
        the cache, and at least one of Pivot's temporaries, which hold no one's work."""
        files = _files(current)
        if not any(is_temporary(e.path) for e in files):
            return False
        return self.recoverable(current)

    def check_confined(self, path: str) -> None:
        """Refuse to write output `path` when it (a folder on the way, or a link inside it) now
        leads outside the project or into .pivot/ through a symbolic link: one made after the
        graph was checked, by the user or by a stage."""
        found = Confinement(self.root).escape(path)
        if found is not None:
            where = f"'{path}'" if found[0] == path else f"'{path}': '{found[0]}'"
            raise Escaped(f"not restoring {where} {found[1]}; nothing was written there: "
                          "replace the link with a real folder, then run the command again")

    def _keep_modified(self, rec: PathRecord, current: PathHash | None) -> str | None:
        kept = self.keep_workspace_copy(rec.path, current, rec)
        if kept is None:
            return None
        where = self.cache.path(kept[0]).relative_to(self.root)
        if current is not None and current.is_dir:
            return (f"'{rec.path}' differed from its lock; that version was kept in the cache as manifest "
                    f"{where} ({kept[1]} file(s) newly stored)")
        return f"'{rec.path}' differed from its lock; that version was kept in the cache as {where}"

    def restore(self, rec: PathRecord, link: str | None = None) -> str | None:
        """Bring one locked output back into the workspace from the cache. A different file
        already there is first stored in the cache, so nothing is lost; returns a note saying so.
        In a folder, only the files that differ are rewritten. `link`: the link mode (default:
        the cache's; "copy" for a writable copy)."""
        self.check_confined(rec.path)
        dest = self.root / rec.path
        current = self.hasher.hash_path(rec.path)  # from the memo: one walk serves both steps
        note = self._keep_modified(rec, current)
        if rec.is_dir:
            self.cache.checkout_dir(rec.hash, dest, {e.path: e.hash for e in _files(current)}, link)
        else:
            self.cache.checkout_file(rec.hash, dest, link)
            self.hasher.remember(rec.path, rec.hash)
        return note


def _files(current: PathHash | None) -> list[DirEntry]:
    """The files of a hashed workspace folder (none for a file or a missing path)."""
    if current is None or not current.is_dir or current.manifest is None:
        return []
    return parse_manifest(current.manifest)
