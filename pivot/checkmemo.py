"""The pre-commit check's memo: skip importing and planning when nothing the check reads changed.

Before a full check of every stage reads anything, the (mode, size, mtime, ctime, inode) of
everything the decision reads is taken: lock files, config, params.yaml, every dep and output
(folders walked), tracked data, and the interpreter with its sys.path folders (installing a
package changes them); of the pipeline's own modules, the hash of their bytes, and of their
folders, the names in them (what an import finds): a module saved unchanged, or rewritten with
the same bytes (a checkout back and forth, the pre-commit check setting unstaged changes aside
and back), is the same code, and reading a 2 MB pipeline costs a millisecond. When the check is clean they
are recorded. The pre-commit check skips importing and planning only when all of these are
unchanged; ctime moves on any write, even one that restores mtime, and a file whose mtime or
ctime is less than RACY_NS before the stats were taken is not trusted (no memo), except a module
whose bytes, as hashed, are those the check imported and summarised (`trusted`).
When only the modules' bytes changed, the check passes without planning if no stage's
fingerprint, params, deps or outputs changed either (`code_only`, from `stage_digest`s recorded
with the memo).
Not covered: a module-level constant computed from the environment or from a file that is not
a dep; `pivot verify` (and CI) always do the full check.
"""

from __future__ import annotations

import json
import os
import stat as stat_mod
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import xxhash

from pivot.hashing import RACY_NS
from pivot.layout import CONFIG, CONFIG_LOCAL, PARAMS_FILE, PIVOT_DIR, STAGES_DIR, TRACKED_DIR
from pivot.records import OutputKind

if TYPE_CHECKING:
    from pivot.repo import Repo

_MEMO_SCHEMA = 4
# A key per schema: an older Pivot sharing the project (a hook installed by another version)
# reads only memos it wrote, and this one only its own.
MEMO_KEY = f"verify-memo{_MEMO_SCHEMA}"
STAGES_KEY = f"{MEMO_KEY}-stages"  # each stage's code and definition at the memo (see `code_only`)


@dataclass(frozen=True)
class Staging:
    """What the staging checks need from the pipeline (kept in the memo, so a memo hit needs no import)."""

    stages: list[str]
    metrics: list[tuple[str, str]]  # (stage, path)
    modules: list[str]  # project files of the modules the pipeline imported

    @classmethod
    def of(cls, repo: Repo) -> Staging:
        g = repo.graph
        metrics = [(n, o.path) for n in g.order for o in g.stages[n].outs if o.kind is OutputKind.METRIC]
        return cls(list(g.order), metrics, sorted(_user_modules(repo)))


class Paths(NamedTuple):
    """What the memo covers, by how each path is looked at."""

    stat: tuple[str, ...]  # stat the path itself
    tree: tuple[str, ...]  # stat every file below a folder
    hash: tuple[str, ...]  # hash the file's bytes (the pipeline's modules)
    names: tuple[str, ...]  # list the names in a folder (the modules' folders: what imports find)


@dataclass(frozen=True)
class Signed:
    """The stats of a set of paths, as one digest, and whether they may be trusted later."""

    paths: Paths
    digest: str
    trusted: bool  # no file's mtime or ctime was within RACY_NS of taking the stats
    hashed: tuple[tuple[int, int, int, int] | None, ...] = ()  # stats of paths.hash before hashing (not in the digest)
    rest: str = ""  # the digest of all but the modules' hashes
    # Modules changed too lately to trust their stats, with the hash of their bytes: trusted only
    # if the check imported and summarised those bytes (`_checked_as_hashed`).
    recent: tuple[tuple[str, str], ...] = ()


class Candidate(NamedTuple):
    """A memo that differs only in the bytes of the pipeline's modules."""

    staging: Staging
    digest: str  # the memo's


@dataclass(frozen=True)
class Memo:
    staging: Staging
    signed: Signed


def _user_modules(repo: Repo) -> set[str]:
    """Project files of the modules the pipeline imported (a helper left untracked would be
    missing from the commit that records its fingerprint)."""
    is_user = repo.fingerprinter.is_user_file
    pivot_dir = str(repo.root / PIVOT_DIR) + os.sep
    found = set()
    for mod in list(sys.modules.values()):
        filename = getattr(mod, "__file__", None)
        if filename and is_user(filename) and not os.path.abspath(filename).startswith(pivot_dir):
            found.add(os.path.relpath(os.path.abspath(filename), repo.root).replace(os.sep, "/"))
    return found


def _environment(root: Path) -> str:
    """The interpreter and import path (without the project root, which loading a pipeline adds)."""
    from pivot.version import __version__

    paths = [p for p in sys.path if os.path.abspath(p or ".") != str(root)]
    return "\n".join([f"memo {_MEMO_SCHEMA}", __version__, sys.version, sys.executable, *paths])


def sign(root: Path, paths: Paths) -> Signed:
    """The stats of those paths now (file hashes and folder listings for some), as one digest."""
    taken = time.time_ns()
    rows = [_environment(root)]
    hashed = _hashed_stats(root, paths.hash)  # before reading: a write from now on changes them
    newest = 0
    modules = []
    recent = []
    for rel, seen in zip(paths.hash, hashed, strict=True):
        try:
            with open(os.path.join(root, rel), "rb") as f:
                digest = xxhash.xxh3_128_hexdigest(f.read())
        except OSError:
            digest = "-"
        modules.append(f"h:{rel}\0{digest}")
        if seen is None or taken - max(seen[1], seen[2]) < RACY_NS:
            recent.append((rel, digest))
    for rel in paths.names:
        try:
            with os.scandir(os.path.join(root, rel)) as it:
                names = sorted(f"{e.name}/" if e.is_dir() else e.name for e in it)
            rows.append(f"n:{rel}\0" + "\0".join(names))
        except OSError:
            rows.append(f"n:{rel}\0-")
    for kind, group in (("s", paths.stat), ("t", paths.tree)):
        for rel in group:
            for name, st in _stats(os.path.join(root, rel), deep=kind == "t"):
                if st is None:
                    rows.append(f"{kind}:{rel}/{name}\0-")
                    continue
                newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
                rows.append(f"{kind}:{rel}/{name}\0{st.st_mode}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:"
                            f"{st.st_ino}")
    rest = xxhash.xxh3_128_hexdigest("\n".join(rows).encode("utf-8", "surrogateescape"))
    digest = xxhash.xxh3_128_hexdigest("\n".join([rest, *modules]).encode("utf-8", "surrogateescape"))
    return Signed(paths, digest, taken - newest >= RACY_NS, hashed, rest, tuple(recent))


def _hashed_stats(root: Path, paths: tuple[str, ...]) -> tuple[tuple[int, int, int, int] | None, ...]:
    """The files that are hashed, as stats: compared when recording, so that a module written
    while the check ran (even back to the bytes hashed) leaves no memo."""
    found: list[tuple[int, int, int, int] | None] = []
    for rel in paths:
        try:
            st = os.stat(os.path.join(root, rel))
            found.append((st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        except OSError:
            found.append(None)
    return tuple(found)


def _stats(path: str, deep: bool) -> list[tuple[str, os.stat_result | None]]:
    try:
        st = os.stat(path)
    except OSError:
        return [("", None)]
    found: list[tuple[str, os.stat_result | None]] = [("", st)]
    if deep and stat_mod.S_ISDIR(st.st_mode):
        _walk(path, ".", found)
    return found


def _walk(folder: str, rel: str, found: list[tuple[str, os.stat_result | None]]) -> None:
    """Every entry below `folder`, in name order (as os.walk: links to folders are not entered)."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        try:
            st: os.stat_result | None = e.stat()
        except OSError:
            st = None
        found.append((f"{rel}/{e.name}", st))
        if e.is_dir(follow_symlinks=False):
            _walk(e.path, f"{rel}/{e.name}", found)


def paths_of(repo: Repo, staging: Staging) -> Paths:
    """What a full check of `repo` reads."""
    from pivot import tracked  # lazy: only when a full check records its memo

    g = repo.graph
    folders = tuple(sorted({os.path.dirname(m) or "." for m in staging.modules}))
    outside = [p for p in sys.path if p and os.path.isdir(p) and not p.startswith(str(repo.root))]
    data = {p for n in g.order for p in (*g.deps[n], *g.outs[n])} | set(tracked.paths(repo.root))
    return Paths((CONFIG, CONFIG_LOCAL, PARAMS_FILE, *outside), (STAGES_DIR, TRACKED_DIR, *sorted(data)),
                 tuple(staging.modules), folders)


def before_check(repo: Repo, earlier: Signed | None = None) -> tuple[Staging, Signed]:
    """The stats of what a full check is about to read, taken before it reads them (a file that
    changes during the check then differs from what is recorded). `earlier`: stats taken before
    this, by the memo lookup; used when they cover the same paths."""
    staging = Staging.of(repo)
    paths = paths_of(repo, staging)
    if earlier is not None and earlier.paths == paths:
        return staging, earlier
    return staging, sign(repo.root, paths)


def record(repo: Repo, staging: Staging, signed: Signed | None, stages: dict[str, str] | None = None) -> None:
    """Remember a clean full check (None, stats too recent to trust, or a module written since
    it was hashed: forget any memo), with `stages`: each stage's `stage_digest`."""
    if signed is None or not trusted(repo, signed):
        repo.state.put_json(MEMO_KEY, None)
        return
    repo.state.put_json(MEMO_KEY, {
        "digest": signed.digest, "rest": signed.rest,
        "stages": staging.stages, "metrics": staging.metrics, "modules": staging.modules,
        "paths": [list(group) for group in signed.paths],
    })
    if stages is not None:
        repo.state.put_json(STAGES_KEY, {"memo": signed.digest, "stages": stages})


def trusted(repo: Repo, signed: Signed) -> bool:
    """Whether a clean check may be remembered with the stats `signed`: no file it covers changed
    too lately to trust its stats, except modules whose bytes the check imported and summarised
    as they were hashed (a module is remembered by the hash of its bytes), and no module was
    written since it was hashed."""
    from pivot.importing import imported_digest  # lazy: only when a check is recorded, not on a memo hit

    if not signed.trusted or signed.hashed != _hashed_stats(repo.root, signed.paths.hash):
        return False
    summarised = repo.fingerprinter.modules.digests
    for rel, digest in signed.recent:
        path = os.path.join(repo.root, rel)
        if imported_digest(path) != digest or summarised.get(path, digest) != digest:
            return False
    return True


def stage_digest(repo: Repo, name: str, fingerprint: str, params: dict[str, Any] | None) -> str:
    """What a stage's decision takes from the pipeline's code: its fingerprint, params, and
    declared deps and outputs (the rest is files, whose stats the memo covers)."""
    outs = "\0".join(f"{_type_name(type(o))}:{o!r}" for o in repo.graph.stages[name].outs)
    text = "\0".join([fingerprint, "" if params is None else json.dumps(params, sort_keys=True, default=repr),
                      *repo.graph.deps[name], "", outs])
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8", "surrogateescape"))


_TYPE_NAMES: dict[type, str] = {}


def _type_name(cls: type) -> str:
    """An output's class, with what it implies (kind, cached, incremental)."""
    found = _TYPE_NAMES.get(cls)
    if found is None:
        found = _TYPE_NAMES[cls] = (f"{cls.__module__}.{cls.__qualname__}:{getattr(cls, 'kind', '')}:"
                                    f"{getattr(cls, 'cached', '')}:{getattr(cls, 'incremental', '')}")
    return found


def code_only(repo: Repo, candidate: Candidate, earlier: Signed) -> bool:
    """Whether the check is clean without planning: nothing but the bytes of the pipeline's
    modules changed since a clean full check (`candidate`, `earlier`: see look_up), and no stage's
    fingerprint, params, deps or outputs did. Every stage then decides as it did then (its lock,
    deps and outputs are unchanged); the memo is recorded for this version."""
    staging, signed = before_check(repo, earlier)
    if staging != candidate.staging:
        return False
    known = repo.state.get_json(STAGES_KEY)
    if not isinstance(known, dict) or known.get("memo") != candidate.digest:
        return False
    old = known.get("stages")
    if not isinstance(old, dict) or len(old) != len(staging.stages):
        return False
    fingerprint = repo.fingerprinter.fingerprint
    stages = {}
    for name in staging.stages:
        s = repo.graph.stages[name]
        stages[name] = stage_digest(repo, name, fingerprint(s.func, s.params).digest, repo.params_of(name)[1])
        if stages[name] != old.get(name):
            return False
    record(repo, staging, signed, stages)
    return True


class Found(NamedTuple):
    staging: Staging | None  # the memo's, when nothing it covers changed
    signed: Signed | None  # the stats taken now of what the memo covers (None: no memo)
    candidate: Candidate | None = None  # the memo, when only the bytes of modules changed


def look_up(root: Path, state_path: Path) -> Found:
    """What the memo says now (see Found)."""
    from pivot.state import State

    if not state_path.exists():
        return Found(None, None)
    state = State(state_path)
    try:
        data = state.get_json(MEMO_KEY)
    finally:
        state.close()
    if not data:
        return Found(None, None)
    try:
        paths = Paths(*(tuple(group) for group in data["paths"]))
        staging = Staging(list(data["stages"]), [(s, p) for s, p in data["metrics"]], list(data["modules"]))
    except (KeyError, TypeError, ValueError):
        return Found(None, None)  # not a memo this version wrote: the full check records one
    now = sign(root, paths)
    if now.digest == data["digest"]:
        return Found(staging, now)
    return Found(None, now, Candidate(staging, data["digest"]) if now.rest == data.get("rest") else None)
