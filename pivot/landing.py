"""Bringing a remote executor's outputs into the workspace, and remembering them for the rest
of the run; and an IncrementalOut started from its locked version before its stage runs.

A remote executor (a cluster that shares nothing with this machine but the remote) answers
with hashes: its outputs are in the local cache (or, with --no-download, left on the remote),
not in the workspace. Landing a result checks them out from the cache and writes metrics from
the bytes the reply carried. What a remote stage produced is remembered, so a stage downstream
whose deps the workspace lacks (--no-download) is prepared from these records instead.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from pivot import atomic
from pivot.errors import CacheError
from pivot.executor.base import StageResult, StageTask
from pivot.hashing import parse_manifest
from pivot.outputs import Out
from pivot.records import PathHash, PathRecord
from pivot.repo import Prepared, Repo


class Landing:
    """Outputs of the stages a remote executor ran in this run."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.root = repo.root
        self.produced: dict[str, PathRecord] = {}
        self.manifests: dict[str, bytes] = {}

    def land(self, result: StageResult, downloads: bool) -> None:
        """Outputs of a remote stage: metrics written from their bytes; the rest checked out from
        the cache, where the executor put them (unless it was told not to download)."""
        inline = dict(result.inline)
        self.manifests.update(result.manifests)
        for rec in result.records:
            self.produced[rec.path] = rec
            if rec.path in inline:
                (self.root / rec.path).parent.mkdir(parents=True, exist_ok=True)
                atomic.write_bytes(self.root / rec.path, inline[rec.path])
                self.repo.hasher.remember(rec.path, rec.hash)
            elif self.repo.in_cache(rec):
                self.repo.restore(rec)
            elif downloads:
                raise CacheError(f"output '{rec.path}' ({rec.hash}) did not reach the cache; run again")

    def prepare(self, name: str, force: bool) -> Prepared:
        """Repo.prepare, with deps a remote stage of this run produced and the workspace lacks
        taken from what it produced."""
        if not self.produced:
            return self.repo.prepare(name, forced=force)
        expected = {d: r.hash for d in self.repo.graph.deps[name] if (r := self.record(d)) is not None}
        prep = self.repo.prepare(name, forced=force, expected=expected or None)
        for d, h in prep.dep_hashes.items():
            rec = self.record(d)
            if h is None and rec is not None:
                prep.dep_hashes[d] = PathHash(rec.hash, rec.is_dir, self.manifests.get(rec.hash))
        return prep

    def start_incremental(self, prep: Prepared) -> None:
        """An IncrementalOut starts from its last locked version, as a writable copy."""
        locked = {r.path: r for r in prep.lock.outs} if prep.lock else {}
        for o in prep.stage.outs:
            rec = locked.get(o.path)
            if not o.incremental or rec is None or not self.repo.in_cache(rec):
                continue
            current = self.repo.hasher.hash_path(o.path)
            if current is not None and current.hash == rec.hash and not _shares_cache(self.root / o.path):
                continue
            self.repo.restore(rec, link="copy" if self.repo.cache.link in ("hardlink", "symlink") else None)

    def record(self, dep: str) -> PathRecord | None:
        """A dep's record when a remote stage of this run produced it (or the folder it is in)
        and the workspace does not have it (--no-download)."""
        if dep in self.produced:
            return self.produced[dep] if not os.path.lexists(self.root / dep) else None
        for path, rec in self.produced.items():
            if rec.is_dir and dep.startswith(path + "/") and not os.path.lexists(self.root / dep):
                rel = dep[len(path) + 1:]
                for e in parse_manifest(self.manifests.get(rec.hash, b"[]")):
                    if e.path == rel:
                        return PathRecord(dep, e.hash)
        return None

    def remote_task(self, task: StageTask, prep: Prepared, outs: tuple[Out, ...]) -> StageTask:
        """What a worker without the workspace needs: deps by hash, and the versions of
        IncrementalOuts the stage starts from (as the local pool leaves them in the workspace)."""
        deps = tuple(PathRecord(d, h.hash, h.is_dir) for d, h in prep.dep_hashes.items() if h is not None)
        manifests = {h.hash: h.manifest for h in prep.dep_hashes.values() if h is not None and h.manifest}
        inputs = []
        for o in outs:
            if o.incremental:
                h = self.repo.hasher.hash_path(o.path)
                if h is not None:
                    inputs.append(PathRecord(o.path, h.hash, h.is_dir))
                    if h.manifest:
                        manifests[h.hash] = h.manifest
        return replace(task, fingerprint=prep.fingerprint, deps=deps, manifests=tuple(manifests.items()),
                       inputs=tuple(inputs))



def _shares_cache(path: Path) -> bool:
    """True when a workspace file is a link into the cache (hardlink or symlink)."""
    try:
        return path.is_symlink() or (path.is_file() and os.stat(path).st_nlink > 1)
    except OSError:
        return False
