"""Lock files at any git revision: git history (pivot.git) read through the lock format.

`pivot.git` reads blobs and walks commits and knows nothing of locks; this module is where the
two meet, so neither git nor the cache imports the lock module.
"""

from __future__ import annotations

from typing import Any

from pivot import lock as lockfile
from pivot import tracked as trackfile
from pivot.git import GitHistory
from pivot.layout import LOCK_SUFFIX, STAGES_DIR, TRACKED_DIR, TRACKED_SUFFIX, stage_of_file
from pivot.lock import StageLock
from pivot.records import NeededOutput
from pivot.tracked import Tracked

TRACKED = "(tracked)"  # what NeededOutput.stage says of tracked data


class History(GitHistory):
    """GitHistory plus the lock files of each revision, parsed once per blob."""

    def __init__(self, root: Any) -> None:
        super().__init__(root)
        self._lock_by_blob: dict[Any, StageLock] = {}
        self._tracked_by_blob: dict[Any, Tracked] = {}

    def locks_at(self, rev: str) -> dict[str, StageLock]:
        """Every lock file recorded at `rev`, by stage name."""
        return self.locks_of(self.commit(rev))

    def locks_of(self, commit: Any) -> dict[str, StageLock]:
        locks: dict[str, StageLock] = {}
        for blob in self.blobs_in(commit, STAGES_DIR):
            stage = stage_of_file(blob.name or "", LOCK_SUFFIX)
            if stage is not None:
                locks[stage] = self._parse(blob, commit)
        return locks

    def _parse(self, blob: Any, commit: Any) -> StageLock:
        if blob.id not in self._lock_by_blob:
            where = self.where(commit, STAGES_DIR, blob.name)
            self._lock_by_blob[blob.id] = lockfile.loads(blob.data, where)
        return self._lock_by_blob[blob.id]

    def tracked_of(self, commit: Any) -> list[Tracked]:
        """The tracked-data records at `commit` (`pivot track`)."""
        found = []
        for blob in self.blobs_in(commit, TRACKED_DIR):
            name = blob.name or ""
            if not name.endswith(TRACKED_SUFFIX):
                continue
            if blob.id not in self._tracked_by_blob:
                where = self.where(commit, TRACKED_DIR, name)
                self._tracked_by_blob[blob.id] = trackfile.loads(blob.data, where, name)
            found.append(self._tracked_by_blob[blob.id])
        return found

    def outputs_needed(self, commits: list[str]) -> dict[str, NeededOutput]:
        """The cache objects the lock files and tracked-data records of `commits` refer to (cached
        outputs only: metrics travel in git). Directories are listed by their manifest's hash."""
        needed: dict[str, NeededOutput] = {}
        for sha in commits:
            commit = self.commit_or_none(sha)
            if commit is None:
                continue
            for stage, lock in self.locks_of(commit).items():
                for rec in lock.outs:
                    if rec.cached and rec.hash not in needed:
                        needed[rec.hash] = NeededOutput(rec.hash, rec.path, stage, rec.is_dir, sha)
            for t in self.tracked_of(commit):
                needed.setdefault(t.hash, NeededOutput(t.hash, t.path, TRACKED, t.is_dir, sha))
        return needed


def locks_at(root: Any, rev: str) -> dict[str, StageLock]:
    with History(root) as h:
        return h.locks_at(rev)
