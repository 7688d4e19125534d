"""pivot get: a stage output or tracked path as of a git revision, from the local cache or a remote,
written to a destination without touching the workspace, the lock files or git.

The revision's lock files and tracked-data records say which objects hold the path
(`pivot.retrieve`). Objects the local cache lacks are fetched from the remote (the workspace's
configuration names it: `config.yaml` as it is now and `config.local.yaml`) through
`pivot.remote.fetch`, which verifies every object before it enters the cache; they stay there,
as after `pivot fetch`. Every file written to the destination is hashed again on the way.
"""

from __future__ import annotations

import os
import posixpath
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pivot import retrieve
from pivot.errors import GetError, PivotError
from pivot.layout import PIVOT_DIR
from pivot.project import project_relative
from pivot.retrieve import Located
from pivot.workspace import Workspace

if TYPE_CHECKING:
    from pivot.remote import Storage


@dataclass(frozen=True)
class GetRequest:
    path: str
    rev: str = "HEAD"
    dest: str | None = None  # default: the path's last part, in the working folder; "DIR/": inside DIR
    remote: str | None = None  # default: the default remote (asked only for what the cache lacks)
    force: bool = False  # replace an existing destination
    jobs: int | None = None


@dataclass(frozen=True)
class Got:
    path: str  # project-relative
    rev: str
    commit: str
    owner: str  # "stage 'NAME'", "tracked data"
    dest: str  # as the user would type it (relative to the working folder when inside it)
    is_dir: bool
    files: int
    bytes: int
    remote: str | None = None  # the remote objects came from (None: all were in the local cache)
    fetched: int = 0  # objects downloaded
    fetched_bytes: int = 0
    from_git: bool = False  # a metric: its bytes came from the git commit


@dataclass
class _Source:
    """The remote, opened on first need; what was fetched from it."""

    ws: Workspace
    req: GetRequest
    where: str  # "'PATH' at REV (sha, owner)", for messages
    commit: str
    storage: Storage | None = None
    jobs: int = 0
    fetched: list[str] = field(default_factory=list)
    bytes: int = 0

    def fetch(self, objects: list[str], path: str) -> None:
        from pivot.records import NeededOutput  # lazy: start-up
        from pivot.remote import default_jobs  # lazy: fsspec and friends only when a remote is needed
        from pivot.remote import fetch as fetch_objects  # lazy: see above

        if self.storage is None:
            if not self.ws.config.remotes and self.req.remote is None:
                raise GetError(f"{self.where}: {len(objects)} object(s) are not in the local cache and no remote is "
                               "configured; add one ('pivot remote add NAME URL --local') and push to it from the "
                               "clone that produced the data ('pivot push')")
            spec = self.ws.remote(self.req.remote)
            self.jobs = self.req.jobs or default_jobs(spec.url)
            self.storage = self.ws.storage(spec, self.jobs)
        wanted = {d: NeededOutput(d, path, "get", False, self.commit) for d in objects}
        with self.ws.lock("get"):
            moved = fetch_objects(self.storage, self.ws.cache, wanted, self.jobs)
            if moved.missing or moved.corrupt:
                _prune_empty(self.ws.cache.dir, [*moved.missing, *moved.corrupt])
        self.fetched += moved.done
        self.bytes += moved.bytes
        if moved.missing or moved.corrupt:
            lost = f"{len(moved.missing)} object(s) missing" if moved.missing else ""
            bad = f"{len(moved.corrupt)} damaged" if moved.corrupt else ""
            name = self.storage.name
            raise GetError(f"{self.where} is neither in the local cache nor on remote '{name}' "
                           f"({', '.join(p for p in (lost, bad) if p)}); run 'pivot push -r {name}' in the clone "
                           "that produced it, then try again")


def _prune_empty(cache_dir: Path, digests: list[str]) -> None:
    """The cache folders a failed fetch made for nothing (only empty ones go)."""
    from pivot.cache import object_relpath  # lazy: start-up

    folders = {str((cache_dir / object_relpath(d)).parent) for d in digests}
    for folder in [*sorted(folders), str(cache_dir / "tmp"), str(cache_dir / "files"), str(cache_dir)]:
        with suppress(OSError):
            os.rmdir(folder)


def get(req: GetRequest, cwd: Path | None = None) -> Got:
    """Write `req.path` as recorded at `req.rev` to the destination; refusals come first."""
    from pivot.history import History  # lazy: pygit2 is heavy

    cwd = Path(os.path.abspath(cwd or Path.cwd()))
    with Workspace.find(cwd) as ws:
        rel = _project_path(ws.root, req.path, cwd)
        history = History(ws.root)
        with history:
            commit = history.commit(req.rev)
            found = retrieve.locate(history, commit, req.rev, rel)
        sha = str(commit.id)
        dest = _destination(ws, req, rel, cwd)
        shown = os.path.relpath(dest, cwd) if str(dest).startswith(str(cwd) + os.sep) else str(dest)
        if found.blob is not None:
            retrieve.write_bytes(found.blob, dest, req.force)
            return Got(rel, req.rev, sha, found.owner, shown, False, 1, len(found.blob), from_git=True)
        source = _Source(ws, req, f"'{rel}' at {req.rev} ({sha[:10]}, {found.owner})", sha)
        got = _write(ws, source, found, dest)
        name = source.storage.name if source.storage is not None and source.fetched else None
        size = got.size if got.is_dir else os.path.getsize(dest)
        return Got(rel, req.rev, sha, found.owner, shown, got.is_dir, len(got.files), size, name,
                   len(source.fetched), source.bytes)


def _write(ws: Workspace, source: _Source, found: Located, dest: Path) -> retrieve.Content:
    """The content into the cache (what it lacks, from the remote), then out to `dest`. An object
    whose cached bytes are damaged is taken out of the cache and fetched again, once."""
    cache, rec, rev = ws.cache, found.record, source.req.rev
    entries = None
    if rec.is_dir:
        entries = retrieve.manifest(cache, rec.hash)
        if entries is None:
            retrieve.remove(cache.path(rec.hash))  # absent, or damaged: a good copy replaces it
            source.fetch([rec.hash], rec.path)
            entries = retrieve.manifest(cache, rec.hash)
            if entries is None:
                raise GetError(f"{source.where}: the directory's manifest fetched from the remote does not parse; "
                               f"push it again from the clone that produced it")
    got = retrieve.content(found, entries, rev)
    lacking = cache.missing(sorted({e.hash for e in got.files}))
    if lacking:
        source.fetch(lacking, found.path)
    bad = retrieve.write(cache, got, dest, source.req.force)
    if bad:
        for digest in bad:
            retrieve.remove(cache.path(digest))
        source.fetch(bad, found.path)
        if retrieve.write(cache, got, dest, source.req.force):
            raise GetError(f"{source.where}: {len(bad)} object(s) do not match their hash even after fetching "
                           "them again; check the disk, then run 'pivot fetch'")
    return got


def _project_path(root: Path, arg: str, cwd: Path) -> str:
    """PATH (relative to the working folder) as a project-relative POSIX path."""
    rel = project_relative(root, arg, cwd)
    if rel == "." or rel == ".." or rel.startswith("../"):
        what = "is the project root" if rel == "." else f"is outside the project ({root})"
        raise GetError(f"'{arg}' {what}; name a stage output or tracked path inside it")
    return rel


def _destination(ws: Workspace, req: GetRequest, rel: str, cwd: Path) -> Path:
    """Where to write, after the refusals: a path Pivot manages, an existing path without
    --force, a folder that does not exist."""
    given = req.dest if req.dest is not None else posixpath.basename(rel)
    if given.endswith(("/", os.sep)):  # a folder to write into
        given += posixpath.basename(rel)
    dest = Path(os.path.abspath(os.path.join(cwd, given)))
    if not dest.parent.is_dir():
        raise GetError(f"cannot write '{given}': folder '{dest.parent}' does not exist; create it first")
    inside = _inside(ws.root, dest)
    if inside is not None:
        if inside == "" or inside.split("/")[0] in (PIVOT_DIR, ".git"):
            raise GetError(f"cannot write '{given}': Pivot or git owns that path; give another destination with -o")
        managed = _managed_overlap(ws, inside)
        if managed is not None:
            raise GetError(f"cannot write '{given}': it is (or overlaps) the workspace's '{managed}', which "
                           "pivot get never changes; give another destination with -o (to restore the workspace's "
                           "version, use 'pivot checkout')")
    if os.path.lexists(dest) and not req.force:
        raise GetError(f"'{given}' already exists; use --force to replace it, or -o to write elsewhere")
    return dest


def _inside(root: Path, dest: Path) -> str | None:
    """`dest` relative to the project root (POSIX; "" for the root), or None when outside."""
    for base, target in ((root, dest), (Path(os.path.realpath(root)), Path(os.path.realpath(dest)))):
        rel = os.path.relpath(target, base).replace(os.sep, "/")
        if rel == ".":
            return ""
        if not rel.startswith("../") and rel != "..":
            return rel
    return None


def _managed_overlap(ws: Workspace, rel: str) -> str | None:
    """A path the workspace's lock files or tracked records name that `rel` is, holds or is inside."""
    from pivot import lock as lockfile  # lazy: start-up
    from pivot import tracked  # lazy: start-up

    paths: list[str] = []
    for name in lockfile.locked_stages(ws.project.stages_dir):
        try:
            lock = lockfile.read(ws.project.stages_dir, name)
        except PivotError:
            continue  # an unreadable lock: status and verify name it
        paths += [r.path for r in lock.outs] if lock is not None else []
    with suppress(PivotError):  # an unreadable record: status and verify name it
        paths += tracked.paths(ws.root)
    for p in sorted(paths):
        if rel == p or rel.startswith(p + "/") or p.startswith(rel + "/"):
            return p
    return None
