"""Collecting plots: which Plot outputs and which revisions, and each plot file's bytes at each
revision, parsed into `PlotView` records (data only, no plotly needed).

- The workspace is read from the files on disk; a past revision through its lock files (read
  from git objects) and the objects they name in the local cache. A version that cannot be
  had (not in the cache, no lock at that revision, not in the workspace) becomes a note on its
  plot, not an error, so one missing object never costs the whole page.
- A workspace file that does not fit its Plot (not CSV/TSV/JSON, a missing column, a
  non-numeric y) is an error: it can be fixed now. The same problem in a past revision's file
  is a note, since `x` and `y` come from today's pipeline and may postdate that file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pivot.errors import PlotDataError, PlotError
from pivot.outputs import Plot
from pivot.plots.model import (
    IMAGE_TYPES,
    SERIES_SUFFIXES,
    WORKSPACE,
    Image,
    PlotDef,
    PlotView,
    Revision,
    Version,
)
from pivot.plots.parse import parse_table

if TYPE_CHECKING:
    from pivot.cache import Cache
    from pivot.graph import Graph
    from pivot.history import History
    from pivot.records import PathRecord

# A found file: (bytes, where they came from) or a note saying why there are none.
Found = tuple[bytes, str] | str

# -- which plots, which revisions -----------------------------------------------------------------


def definitions(graph: Graph) -> list[PlotDef]:
    """The Plot outputs of the current pipeline, in run order."""
    found = []
    for name in graph.order:
        for out in graph.stages[name].outs:
            path = out.path
            if isinstance(out, Plot):
                found.append(PlotDef(path, name, out.x, out.y))
    return found


def diff_revisions(revs: tuple[str, ...] | list[str]) -> list[str]:
    """What `plots diff` compares: none given -> HEAD and the workspace; one -> it and the
    workspace; more -> exactly those (name `workspace` to include it)."""
    revs = list(dict.fromkeys(revs))
    if len(revs) <= 1:
        revs = (revs or ["HEAD"]) + [WORKSPACE]
    return list(dict.fromkeys(revs))


def resolve(history: History | None, names: list[str]) -> list[Revision]:
    """Each name as a Revision; an unknown one raises GitError before anything is read."""
    resolved = []
    for name in names:
        if name == WORKSPACE:
            resolved.append(Revision(WORKSPACE))
        else:
            assert history is not None
            from pivot.metrics import resolve as commit_id  # says so when there are no commits yet

            resolved.append(Revision(name, commit_id(history, name)))
    return resolved


# -- finding the files ----------------------------------------------------------------------------


def _supported(path: str) -> bool:
    suffix = Path(path).suffix.lower()
    return suffix in SERIES_SUFFIXES or suffix in IMAGE_TYPES


def _workspace_files(root: Path, d: PlotDef) -> dict[str, Found]:
    full = root / d.path
    fix = f"run 'pivot checkout' or 'pivot run {d.stage}'" if d.stage else "run 'pivot checkout'"
    if not full.exists():
        return {d.path: f"not in the workspace; {fix}"}
    if not full.is_dir():
        return {d.path: (full.read_bytes(), d.path)}
    files: dict[str, Found] = {}
    for dirpath, dirnames, filenames in os.walk(full):
        dirnames.sort()
        for name in sorted(filenames):
            rel = Path(dirpath, name).relative_to(root).as_posix()
            if _supported(rel):
                files[rel] = (Path(dirpath, name).read_bytes(), rel)
    return files or {d.path: "the folder holds no CSV, TSV, JSON or image file"}


def _cached(cache: Cache, digest: str, rev: Revision) -> Found:
    obj = cache.path(digest)
    try:
        return obj.read_bytes(), str(obj)
    except FileNotFoundError:
        fetch = "pivot fetch" if rev.name == "HEAD" else "pivot fetch --all-commits"
        return f"not in the local cache (object {digest[:10]}…); run '{fetch}' to download it from the remote"


def _revision_files(cache: Cache, d: PlotDef, rec: PathRecord, rev: Revision) -> dict[str, Found]:
    if not rec.is_dir:
        return {d.path: _cached(cache, rec.hash, rev)}
    from pivot.errors import CacheError

    try:
        entries = cache.read_manifest(rec.hash)
    except CacheError:
        return {d.path: _cached(cache, rec.hash, rev)}  # the manifest itself is missing: same note
    files = {f"{d.path}/{e.path}": _cached(cache, e.hash, rev) for e in entries if _supported(e.path)}
    return files or {d.path: "the folder holds no CSV, TSV, JSON or image file"}


def _plot_records(history: History, rev: Revision) -> dict[str, tuple[str, PathRecord]]:
    """path -> (stage, lock record) of every plot the revision's lock files record."""
    assert rev.commit is not None
    return {rec.path: (stage, rec) for stage, lock in history.locks_at(rev.commit).items()
            for rec in lock.outs if rec.kind == Plot.kind}


# -- one version of one file ----------------------------------------------------------------------


def _version(rev: Revision, path: str, d: PlotDef, found: Found) -> Version:
    if isinstance(found, str):
        return Version(rev, note=found)
    data, source = found
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_TYPES:
        return Version(rev, source, image=Image(IMAGE_TYPES[suffix], data))
    try:
        return Version(rev, source, table=parse_table(path, data, d.x, d.y))
    except PlotDataError as exc:
        if rev.commit is None:
            raise PlotError(f"plot {path}{_of(d)}: {exc}") from None
        return Version(rev, source, note=f"cannot be drawn: {exc}")


def _of(d: PlotDef) -> str:
    return f" (stage '{d.stage}')" if d.stage else ""


# -- collecting ---------------------------------------------------------------------------------

# What one revision has: each plot file's path -> (the Plot it belongs to, its bytes or a note).
Files = dict[str, tuple[PlotDef, Found]]


def collect(root: Path, cache: Cache, defs: list[PlotDef], revisions: list[Revision],
            history: History | None = None) -> list[PlotView]:
    """Every plot file of `defs` (and of plots that only a revision's locks record) at each
    revision. A directory Plot contributes one view per supported file inside it."""
    by_path: dict[str, PlotDef] = {d.path: d for d in defs}
    per_rev: list[Files] = []
    for rev in revisions:
        if rev.commit is None:
            per_rev.append(_files_in_workspace(root, defs))
        else:
            assert history is not None
            per_rev.append(_files_at(history, cache, rev, by_path))
    order = list(dict.fromkeys(p for files in per_rev for p in files))
    order.sort(key=lambda p: list(by_path).index(_owner(p, by_path)))
    views = []
    for path in order:
        d = next(files[path][0] for files in per_rev if path in files)
        current = _owner(path, by_path) in {c.path for c in defs}
        versions = [_version(rev, path, d, files[path][1]) if path in files
                    else Version(rev, note=_absent(rev, current))
                    for rev, files in zip(revisions, per_rev, strict=True)]
        views.append(PlotView(path, d, tuple(versions)))
    return views


def _files_in_workspace(root: Path, defs: list[PlotDef]) -> Files:
    files: Files = {}
    for d in defs:
        files.update({p: (d, f) for p, f in _workspace_files(root, d).items()})
    return files


def _files_at(history: History, cache: Cache, rev: Revision, by_path: dict[str, PlotDef]) -> Files:
    """The plot files at a past revision. A plot that only its locks record (today's pipeline
    lacks it) is added to `by_path`, so later revisions list it too."""
    records = _plot_records(history, rev)
    for path, (stage, _rec) in records.items():
        by_path.setdefault(path, PlotDef(path, stage))
    files: Files = {}
    for d in by_path.values():
        if d.path in records:
            files.update({p: (d, f) for p, f in _revision_files(cache, d, records[d.path][1], rev).items()})
        else:
            files[d.path] = (d, f"no lock file at {rev.name} records it "
                                "(the stage had not run there, or did not declare this plot)")
    return files


def _owner(path: str, by_path: dict[str, PlotDef]) -> str:
    while path not in by_path and "/" in path:
        path = path.rsplit("/", 1)[0]
    return path


def _absent(rev: Revision, current: bool) -> str:
    if rev.commit is not None:
        return f"not present at {rev.name}"
    return "not in the workspace" if current else "not a Plot of the current pipeline"


def notes(views: list[PlotView]) -> list[str]:
    return [f"{v.path} at {ver.rev.name}: {ver.note}" for v in views for ver in v.versions if ver.note]
