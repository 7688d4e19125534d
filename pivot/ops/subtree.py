"""`pivot fetch PATH` / `pivot pull PATH`: a path inside a directory output (or a tracked
directory), or a whole output, instead of a stage. Only that subtree's objects are fetched (the
directory's manifest first, to know which), and pull places only those files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pivot.errors import RemoteError
from pivot.project import project_relative
from pivot.records import NeededOutput

if TYPE_CHECKING:
    from pivot.cache import Cache
    from pivot.checkout import CheckoutResult
    from pivot.project import Project
    from pivot.remote import Storage, Transfer


@dataclass(frozen=True)
class Subtree:
    """`prefix` ("" for all of it) inside output `output` (hash `digest`) of stage `stage`."""

    output: str
    digest: str
    is_dir: bool
    stage: str
    prefix: str

    @property
    def shown(self) -> str:
        return f"{self.output}/{self.prefix}" if self.prefix else self.output


def split_targets(project: Project, targets: tuple[str, ...]) -> tuple[tuple[str, ...], list[Subtree]]:
    """Targets that name a stage with a lock file, and the others as paths inside cached outputs
    (relative to the current folder). A target that is neither is refused, naming both readings."""
    from pivot import lock as lockfile  # lazy: start-up

    stages = tuple(t for t in targets if lockfile.with_variants(project.stages_dir, (t,), strict=False))
    paths = [t for t in targets if t not in stages]
    if not paths:
        return stages, []
    outputs = _cached_outputs(project)
    found = []
    for target in paths:
        rel = project_relative(project.root, target, Path.cwd())
        owner = next((o for o in outputs if rel == o.output or (o.is_dir and rel.startswith(o.output + "/"))), None)
        if owner is None:
            raise RemoteError(f"'{target}' is neither a stage with a lock file nor a path inside a cached output or "
                              "tracked path; check the name with 'pivot list' or the path with 'pivot status'")
        found.append(Subtree(owner.output, owner.digest, owner.is_dir, owner.stage, rel[len(owner.output) + 1:]))
    return stages, found


def _cached_outputs(project: Project) -> list[Subtree]:
    from pivot import lock as lockfile  # lazy: start-up
    from pivot import tracked as trackfile  # lazy: start-up
    from pivot.history import TRACKED  # lazy: pygit2 is heavy
    from pivot.records import OutputKind  # lazy: start-up

    found = []
    for name in lockfile.locked_stages(project.stages_dir):
        lock = lockfile.read(project.stages_dir, name)
        for rec in lock.outs if lock is not None else ():
            if rec.cached and rec.kind != OutputKind.METRIC:
                found.append(Subtree(rec.path, rec.hash, rec.is_dir, name, ""))
    found += [Subtree(t.path, t.hash, t.is_dir, TRACKED, "") for t in trackfile.read_all(project.root)]
    return found


def _files(cache: Cache, sub: Subtree) -> dict[str, str]:
    """The subtree's files (path inside the output -> hash), from the manifest in the cache."""
    if not sub.is_dir:
        return {"": sub.digest}
    prefix = sub.prefix + "/" if sub.prefix else ""
    return {e.path: e.hash for e in cache.read_manifest(sub.digest)
            if not prefix or e.path.startswith(prefix) or e.path == sub.prefix}


def fetch_subtrees(storage: Storage, cache: Cache, subtrees: list[Subtree], jobs: int) -> list[Transfer]:
    """The manifests the cache lacks, then only the subtrees' files."""
    from pivot.remote import fetch  # lazy: start-up

    done = []
    manifests = {s.digest: NeededOutput(s.digest, s.output, s.stage, False, "workspace")
                 for s in subtrees if s.is_dir and not cache.has(s.digest)}
    if manifests:
        done.append(fetch(storage, cache, manifests, jobs))
    wanted: dict[str, NeededOutput] = {}
    for sub in subtrees:
        if sub.is_dir and not cache.has(sub.digest):
            continue  # its manifest is not on the remote either: reported by the first fetch
        files = _files(cache, sub)
        if not files:
            raise RemoteError(f"'{sub.shown}' is not in directory '{sub.output}' as its lock file records it; "
                              f"list what it holds with 'pivot pull {sub.output}' or check the path")
        for path, digest in files.items():
            shown = f"{sub.output}/{path}" if path else sub.output
            wanted.setdefault(digest, NeededOutput(digest, shown, sub.stage, False, "workspace"))
    done.append(fetch(storage, cache, wanted, jobs))
    return done


def place_subtrees(root: Path, cache: Cache, subtrees: list[Subtree], force: bool) -> CheckoutResult:
    """Put the subtrees' files in the workspace; a file whose current content differs is kept
    unless `force`. A path that leads out of the project through a symbolic link is refused."""
    from pivot.checkout import KEPT_WHY, CheckoutResult  # lazy: start-up
    from pivot.confine import Confinement  # lazy: start-up
    from pivot.errors import Escaped  # lazy: start-up
    result = CheckoutResult()
    confinement = Confinement(root)
    for sub in subtrees:
        if sub.is_dir and not cache.has(sub.digest):
            result.missing.append(sub.shown)
            continue
        for path, digest in sorted(_files(cache, sub).items()):
            shown = f"{sub.output}/{path}" if path else sub.output
            dest = root / shown
            if (escape := confinement.escape(shown)) is not None:
                raise Escaped(f"not restoring '{shown}': '{escape[0]}' {escape[1]}; nothing was written there: "
                              "replace the link with a real folder, then run the command again")
            current = _hash_or_empty(dest)  # hashed once: whether it matches, and whether the cache has it
            if current == digest and not dest.is_symlink():
                continue
            if dest.exists() and not force and not cache.has(current):
                result.kept.append((shown, KEPT_WHY))
                continue
            if not cache.has(digest):
                result.missing.append(shown)
                continue
            cache.checkout_file(digest, dest)
            result.restored.append(shown)
    return result


def _hash_or_empty(path: Path) -> str:
    from pivot.hashing import hash_file  # lazy: start-up

    try:
        return hash_file(path) if path.is_file() else ""
    except OSError:
        return ""


def merged(transfers: list[Transfer]) -> Transfer:
    """Several fetches from one remote as one result."""
    from pivot.remote import Transfer  # lazy: start-up

    out = Transfer(transfers[0].remote)
    for t in transfers:
        out.done += t.done
        out.bytes += t.bytes
        out.present += t.present
        out.missing.update(t.missing)
        out.corrupt.update(t.corrupt)
        out.notes += [n for n in t.notes if n not in out.notes]
        out.seconds += t.seconds
    return out
