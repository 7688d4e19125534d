"""pivot track / pivot untrack: data kept in the cache and described by a small committed record
(.pivot/tracked/<path>.yaml) instead of being committed to git."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pivot import gitignore, tracked
from pivot.confine import Confinement
from pivot.errors import TrackError
from pivot.layout import PIVOT_DIR
from pivot.project import project_relative
from pivot.tracked import Tracked
from pivot.verify import TrackedChange, tracked_changes
from pivot.workspace import Workspace

if TYPE_CHECKING:
    from pivot.records import PathRecord
    from pivot.repo import Repo


@dataclass(frozen=True)
class TrackResult:
    tracked: Tracked
    change: str  # "added", "updated" (a new version recorded) or "unchanged"


@dataclass(frozen=True)
class UntrackResult:
    path: str
    copied: int  # files that were links into the cache, now ordinary writable copies


def project_path(root: Path, arg: str, cwd: Path) -> str:
    """A command-line path as a project-relative POSIX path, or a refusal naming it."""
    rel = project_relative(root, arg, cwd)
    if rel == "." or rel == ".." or rel.startswith("../"):
        what = "is the project root itself" if rel == "." else f"is outside the project ({root})"
        raise TrackError(f"'{arg}' {what}; track a file or folder inside the project")
    top = rel.split("/")[0]
    if top in (PIVOT_DIR, ".git"):
        raise TrackError(f"'{arg}' is inside {top}/, which {'Pivot' if top == PIVOT_DIR else 'git'} owns; "
                         "track a file or folder elsewhere in the project")
    return rel


def _check(repo: Repo, rel: str, arg: str, records: list[Tracked]) -> None:
    """Refuse `rel` for `pivot track` (before anything is written)."""
    found = Confinement(repo.root).escape(rel)
    if found is not None:
        at = "" if found[0] == rel else f" ('{found[0]}')"
        raise TrackError(f"'{arg}'{at} {found[1]}; track the data where it really is, inside the project")
    if not os.path.lexists(repo.root / rel):
        raise TrackError(f"'{arg}' does not exist; create it first, or check the path")
    producers = repo.graph.producers_of(rel)
    if producers:
        name = sorted(producers)[0]
        raise TrackError(f"'{rel}' is (or overlaps) an output of stage '{name}', which Pivot already caches; "
                         "'pivot run' records it: track only data no stage produces")
    for t in records:
        if t.path != rel and (rel.startswith(t.path + "/") or t.path.startswith(rel + "/")):
            where = "inside tracked folder" if rel.startswith(t.path + "/") else "around tracked path"
            raise TrackError(f"'{rel}' is {where} '{t.path}'; run 'pivot track {t.path}' to record its "
                             f"new version, or 'pivot untrack {t.path}' first")


def _git_tracked(root: Path, rels: list[str]) -> None:
    from pivot.git import run_git  # lazy: start-up

    listed = [f for f in run_git(root, "ls-files", "-z", "--", *rels).stdout.decode(errors="replace").split("\0") if f]
    for rel in rels:  # run at the project root, git lists paths relative to it
        if any(f == rel or f.startswith(rel + "/") for f in listed):
            raise TrackError(f"git already tracks '{rel}'; run 'git rm -r --cached {rel}' (keeps the files) "
                             f"and commit, then 'pivot track {rel}'")


def _ignored(repo: Repo) -> list[str]:
    return [o.path for s in repo.stages for o in s.outs if o.cached] + tracked.paths(repo.root)


def track(args: tuple[str, ...], cwd: Path | None = None) -> list[TrackResult]:
    """Store each path in the cache and write (or update) its record; all refusals come first."""
    cwd = cwd or Path.cwd()
    with Workspace.find() as ws:
        repo = ws.repo
        records = tracked.read_all(ws.root)
        rels = list(dict.fromkeys(project_path(ws.root, a, cwd) for a in args))
        for rel, arg in zip(rels, args, strict=False):
            _check(repo, rel, arg, records)
        _git_tracked(ws.root, rels)
        results = []
        with ws.lock("track"):
            for rel in rels:
                old = tracked.read(ws.root, rel)
                rec = _store(repo, rel, old)
                if rec.is_dir:
                    entries = repo.cache.read_manifest(rec.hash)
                    new = Tracked(rel, rec.hash, True, sum(e.size for e in entries), len(entries))
                else:
                    new = Tracked(rel, rec.hash, False, os.stat(ws.root / rel).st_size)
                tracked.write(ws.root, new)
                change = "added" if old is None else "unchanged" if old == new else "updated"
                results.append(TrackResult(new, change))
            gitignore.update(ws.root, _ignored(repo))
        return results


def _store(repo: Repo, rel: str, old: Tracked | None) -> PathRecord:
    """Put `rel` in the cache and return its record. A folder tracked before, in a copying link
    mode, is hashed through the state's memo (only files changed since they were last hashed are
    read) and only the files whose objects the cache lacks are copied: re-tracking 100,000 files
    after one changed copies one file, not 100,000. Anything else goes through `save_output`."""
    from pivot.cache import save_output  # lazy: start-up
    from pivot.hashing import parse_manifest  # lazy: start-up
    from pivot.records import OutputKind, PathRecord  # lazy: start-up

    if old is not None and old.is_dir and repo.cache.link not in ("hardlink", "symlink"):
        current = repo.hasher.hash_path(rel)
        if current is not None and current.is_dir and current.manifest is not None:
            entries = parse_manifest(current.manifest)
            lacking = set(repo.cache.missing(e.hash for e in entries))
            for e in entries:
                if e.hash in lacking:
                    if repo.cache.add_file(repo.root / rel / e.path) != e.hash:
                        break  # changed since it was hashed: store the folder afresh below
                    lacking.discard(e.hash)
            else:
                return PathRecord(rel, repo.cache.add_bytes(current.manifest), True, OutputKind.OUT)
    rec, rows = save_output(repo.cache, repo.root, rel, OutputKind.OUT, cached=True)
    repo.state.put_files(rows)
    return rec


def untrack(args: tuple[str, ...], cwd: Path | None = None) -> list[UntrackResult]:
    """Forget each path's record and .gitignore entry; the data stays, as ordinary files."""
    cwd = cwd or Path.cwd()
    with Workspace.find() as ws:
        repo = ws.repo
        rels = list(dict.fromkeys(project_path(ws.root, a, cwd) for a in args))
        found = []
        for rel in rels:
            record = tracked.read(ws.root, rel)
            if record is None:
                where = tracked.record_path(ws.root, rel).relative_to(ws.root)
                raise TrackError(f"'{rel}' is not tracked (no {where}); 'ls .pivot/tracked' shows what is")
            found.append(record)
        results = []
        with ws.lock("untrack"):
            for record in found:
                copied = _unlink_from_cache(repo, record)
                tracked.remove(ws.root, record.path)
                results.append(UntrackResult(record.path, copied))
            gitignore.update(ws.root, _ignored(repo))
        return results


def _unlink_from_cache(repo: Repo, record: Tracked) -> int:
    """Replace the files of `record` that are links to cache objects (hardlink or symlink link
    modes) by ordinary copies, so that 'pivot gc' can never take the data away."""
    if record.is_dir:
        try:
            files = [(f"{record.path}/{e.path}", e.hash) for e in repo.cache.read_manifest(record.hash)]
        except Exception:  # the manifest is gone from the cache: nothing can be linked to it
            return 0
    else:
        files = [(record.path, record.hash)]
    copied = 0
    for rel, digest in files:
        if repo.cache.is_linked(digest, repo.root / rel):
            repo.cache.checkout_file(digest, repo.root / rel, link="copy")
            copied += 1
    return copied


def changes(repo: Repo) -> list[TrackedChange]:
    """Tracked data whose workspace content differs from its record, or is missing."""
    return tracked_changes(repo)
