"""The stage graph: path checks, producer lookup, cycle detection and a stable topological order."""

from __future__ import annotations

import functools
import heapq
import os
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from pivot import tracked
from pivot.confine import Confinement
from pivot.errors import GraphError
from pivot.outputs import Out
from pivot.stage import Stage

if TYPE_CHECKING:
    from pivot.listings import Listings

# A path that is already normal: relative, POSIX, no empty, '.' or '..' part, outside .pivot/ and
# .git/, not blank (most declared paths; checked by one match instead of the steps below).
_NORMAL = re.compile(r"(?!\.pivot(?:/|$)|\.git(?:/|$)|.:)(?:(?!\.\.?(?:/|$))[^/\\:\s][^/\\]*/)*"
                     r"(?!\.\.?$)[^/\\:\s][^/\\]*")


def is_normal(path: str) -> bool:
    """Whether `path` is already a normal project path (then `normal_form` returns it as it is)."""
    return _NORMAL.fullmatch(path) is not None


def normalize_path(path: str, stage: str, role: str) -> str:
    """A project-relative POSIX path, or a GraphError naming the stage."""
    return path if _NORMAL.fullmatch(path) else normal_form(path, stage, role)


def normal_form(path: str, stage: str, role: str) -> str:
    """`normalize_path` step by step: each way a path can be wrong is told apart."""
    if not path or not path.strip():
        raise GraphError(f"stage '{stage}': empty {role} path")
    if path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
        raise GraphError(
            f"stage '{stage}': {role} '{path}' is absolute; write it relative to the project root"
        )
    norm = posixpath.normpath(path.replace("\\", "/"))
    if norm == ".." or norm.startswith("../"):
        raise GraphError(f"stage '{stage}': {role} '{path}' leaves the project root; keep paths inside the project")
    if norm == ".":
        raise GraphError(f"stage '{stage}': {role} '{path}' is the project root itself; name a file or folder")
    if norm == ".pivot" or norm.startswith(".pivot/") or norm == ".git" or norm.startswith(".git/"):
        raise GraphError(f"stage '{stage}': {role} '{path}' is inside {norm.split('/')[0]}/, which Pivot or git owns")
    return norm


def _ancestors(path: str) -> list[str]:
    """The folders above `path` (`a/b/c` -> `a`, `a/b`)."""
    found = []
    i = path.find("/")
    while i != -1:
        found.append(path[:i])
        i = path.find("/", i + 1)
    return found


def _folders(folder: str) -> list[str]:
    """`folder` and the folders above it (`a/b` -> `a`, `a/b`); none for the root (``)."""
    return [*_ancestors(folder), folder] if folder else []


def _by_folder(paths: Iterable[str]) -> dict[str, list[str]]:
    """`paths` by the folder they are in: what lies above a path is its folder and what lies
    above that, worked out once per folder (10,000 outputs in one folder: once)."""
    found: dict[str, list[str]] = {}
    for p in paths:
        found.setdefault(p.rpartition("/")[0], []).append(p)
    return found


@dataclass
class Graph:
    stages: dict[str, Stage]
    deps: dict[str, tuple[str, ...]]  # normalised dep paths per stage
    outs: dict[str, tuple[str, ...]]  # normalised out paths per stage
    producer: dict[str, str]  # out path -> stage name
    inside: dict[str, set[str]] = field(default_factory=dict)  # folder -> stages with outputs below it
    upstream: dict[str, set[str]] = field(default_factory=dict)
    downstream: dict[str, set[str]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    # folder -> the stages whose output is that folder or one above it (filled as deps are looked up)
    _above: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False, compare=False)

    def producers_of(self, dep: str) -> set[str]:
        """Stages whose outputs are the dep, contain it, or lie inside it."""
        found: set[str] = set()
        if dep in self.producer:
            found.add(self.producer[dep])
        folder = dep.rpartition("/")[0]
        if folder:
            above = self._above.get(folder)
            if above is None:
                above = self._above[folder] = tuple(self.producer[a] for a in _folders(folder) if a in self.producer)
            found.update(above)
        found.update(self.inside.get(dep, ()))
        return found

    def with_upstream(self, names: list[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(names)
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(self.upstream[n])
        return seen

    def select(self, targets: list[str], single: bool = False) -> list[str]:
        """The stages to consider, in order: the targets and (unless single) what they need.
        A sweep's name (`train`) stands for all its variants (`train@model=tree,seed=1`, ...)."""
        targets = self.expand_sweeps(targets)
        if not targets:
            return list(self.order)
        wanted = set(targets) if single else self.with_upstream(targets)
        return [n for n in self.order if n in wanted]


    def expand_sweeps(self, targets: list[str]) -> list[str]:
        """`targets` with each sweep's name replaced by its variants; an unknown name is an error."""
        found: list[str] = []
        for t in targets:
            if t in self.stages:
                found.append(t)
                continue
            variants = [n for n, s in self.stages.items() if s.sweep == t]
            if not variants:
                raise GraphError(f"unknown stage '{t}'; run 'pivot list' to see the stages")
            found.extend(variants)
        return found


def build(stages: list[Stage], root: Path, listings: Listings | None = None) -> Graph:
    """Check the stages and order them. The graph's stages carry their paths resolved: every
    dep and output path is normalised (project-relative POSIX), so later code never re-pairs
    declarations with paths. `listings`: which folders hold links may be remembered there."""
    resolved = _resolve_all(stages)
    _confine(resolved, root, listings)
    producer = _producers(resolved)
    by_folder = _by_folder(producer)
    _check_nesting(producer, by_folder)
    g = Graph(stages={s.name: s for s in resolved}, deps={s.name: s.deps for s in resolved},
              outs={s.name: tuple(o.path for o in s.outs) for s in resolved}, producer=producer)
    for folder, paths in by_folder.items():
        names = {producer[p] for p in paths}
        for anc in _folders(folder):
            g.inside.setdefault(anc, set()).update(names)
    tracked_data = tracked.read_all(root)  # a tracked path may be absent here: 'pivot checkout' restores it
    _not_tracked(producer, tracked_data)
    g.upstream = {s.name: set() for s in resolved}
    g.downstream = {s.name: set() for s in resolved}
    for s in resolved:
        for d in s.deps:
            ups = g.producers_of(d)
            if not ups and not os.path.exists(os.path.join(root, d)) and tracked.covering(tracked_data, d) is None:
                raise GraphError(
                    f"stage '{s.name}' depends on '{d}', which no stage produces and which does not exist; "
                    "create it or declare it in another stage's outs"
                )
            for u in ups:
                g.upstream[s.name].add(u)
                g.downstream[u].add(s.name)
    g.order = _order(resolved, g.upstream, g.downstream)
    return g


def _resolve_all(stages: list[Stage]) -> list[Stage]:
    """`_resolve` of each stage; each distinct path matched once (a chain's output is the next
    stage's dep): when all are normal, only a stage with a repeated dep changes."""
    paths = {p for s in stages for p in s.deps}
    paths.update(o.path for s in stages for o in s.outs)
    if all(map(_NORMAL.fullmatch, paths)):
        return [s if len(s.deps) < 2 or len(set(s.deps)) == len(s.deps) else _resolve(s) for s in stages]
    return [_resolve(s) for s in stages]


def _resolve(s: Stage) -> Stage:
    """The stage with every dep and output path normalised (duplicate deps dropped)."""
    if all(map(_NORMAL.fullmatch, s.deps)) and all(_NORMAL.fullmatch(o.path) for o in s.outs) \
            and len(set(s.deps)) == len(s.deps):
        return s  # already normal (the usual case): no copies
    deps = tuple(dict.fromkeys(normalize_path(d, s.name, "dep") for d in s.deps))
    outs = tuple(_with_path(o, normalize_path(o.path, s.name, "output")) for o in s.outs)
    if deps == s.deps and all(a is b for a, b in zip(outs, s.outs, strict=True)):
        return s  # already normal (the usual case): no copies
    return replace(s, deps=deps, outs=outs)


def _with_path(out: Out, path: str) -> Out:
    return out if out.path == path else replace(out, path=path)


def _confine(stages: list[Stage], root: Path, listings: Listings | None) -> None:
    """No dep or output may lead outside the project, or into .pivot/, through a symlink."""
    recall = None if listings is None else functools.partial(listings.answer, "links")
    paths = (p for s in stages for p in (*s.deps, *(o.path for o in s.outs)))
    found = Confinement(root, recall=recall).first_problem(paths)
    if found is None:
        return
    path, problem = found
    for s in stages:  # which stage declared it, and as what
        if path in s.deps:
            _escapes(s, "dep", path, problem)
        if any(o.path == path for o in s.outs):
            _escapes(s, "output", path, problem)


def _escapes(s: Stage, role: str, path: str, problem: str | None) -> NoReturn:
    raise GraphError(f"stage '{s.name}': {role} '{path}' {problem}; "
                     "declare a path inside the project, or replace the link with a folder")


def _producers(stages: list[Stage]) -> dict[str, str]:
    """Output path -> the stage that produces it; one producer per output."""
    producer: dict[str, str] = {}
    for s in stages:
        for o in s.outs:
            if o.path in producer:
                other = producer[o.path]
                who = f"stages '{other}' and '{s.name}' both" if other != s.name else f"stage '{s.name}' twice"
                raise GraphError(f"{who} declare output '{o.path}'; an output must have one producer")
            producer[o.path] = s.name
    return producer


def _check_nesting(producer: dict[str, str], by_folder: dict[str, list[str]]) -> None:
    """No output lies inside another (`by_folder`: the output paths by folder)."""
    for folder, paths in by_folder.items():
        for anc in _folders(folder):
            if anc in producer:
                p = paths[0]
                raise GraphError(
                    f"output '{p}' of stage '{producer[p]}' is inside output '{anc}' of stage '{producer[anc]}'; "
                    "outputs may not nest"
                )


def _not_tracked(producer: dict[str, str], tracked_data: list[tracked.Tracked]) -> None:
    """No stage may produce tracked data (`pivot track`), nor a path inside or around it."""
    for t in tracked_data:
        for p, name in producer.items():
            if p == t.path or p.startswith(t.path + "/") or t.path.startswith(p + "/"):
                raise GraphError(f"output '{p}' of stage '{name}' overlaps tracked data '{t.path}' "
                                 f"('pivot track'); run 'pivot untrack {t.path}' or declare another output")


def _order(stages: list[Stage], upstream: dict[str, set[str]], downstream: dict[str, set[str]]) -> list[str]:
    """Kahn's algorithm, ties broken by definition order; a cycle is a GraphError."""
    index = {s.name: i for i, s in enumerate(stages)}
    if all(index[u] < i for i, s in enumerate(stages) for u in upstream[s.name]):
        return list(index)  # defined in run order already (the usual case): what the heap below gives
    waiting = {n: len(u) for n, u in upstream.items()}
    ready = [(index[n], n) for n, c in waiting.items() if c == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, n = heapq.heappop(ready)
        order.append(n)
        for d in downstream[n]:
            waiting[d] -= 1
            if waiting[d] == 0:
                heapq.heappush(ready, (index[d], d))
    if len(order) < len(stages):
        raise GraphError(f"the stages form a cycle: {' -> '.join(_find_cycle(upstream, set(order)))}")
    return order


def _find_cycle(upstream: dict[str, set[str]], done: set[str]) -> list[str]:
    """One cycle among the stages not ordered, written in data-flow order (a -> b: b needs a)."""
    start = min(n for n in upstream if n not in done)
    path: list[str] = []
    seen: dict[str, int] = {}
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = min(u for u in upstream[node] if u not in done)
    cycle = [*path[seen[node]:], node]
    return list(reversed(cycle))


class Frontier:
    """The stages of a run whose upstream (among the run's stages) has all settled, or has
    one that failed or was not run, in run order. Each stage counts its unsettled upstream, so
    what a settled stage makes ready is found from its downstream alone, not by scanning every
    stage again. `names` must be in topological order (as `Graph.select` gives them)."""

    def __init__(self, graph: Graph, names: list[str]) -> None:
        self._index = {n: i for i, n in enumerate(names)}
        self._downstream = graph.downstream
        self._waiting = {n: sum(1 for u in graph.upstream[n] if u in self._index) for n in names}
        self._heap = [(i, n) for i, n in enumerate(names) if self._waiting[n] == 0]  # sorted: a heap
        self._new = [n for _i, n in self._heap]  # ready since the last `take_new`

    def first(self) -> str | None:
        """The ready stage that comes first in run order (left in the frontier), or None."""
        return self._heap[0][1] if self._heap else None

    def pop(self) -> None:
        heapq.heappop(self._heap)

    def settled(self, name: str, ok: bool) -> None:
        """`name` is done: its downstream wait for one stage less; when it failed or was not
        run, they come up now (to be found not runnable), whatever else they wait for."""
        for d in self._downstream[name]:
            if d in self._waiting:
                self._waiting[d] -= 1
                if self._waiting[d] == 0 or not ok:
                    self.again(d)

    def again(self, name: str) -> None:
        """`name` is ready (again: a stage to retry). A stage may come up more than once: the
        caller passes over one that is no longer pending."""
        heapq.heappush(self._heap, (self._index[name], name))
        self._new.append(name)

    def take_new(self) -> list[str]:
        """The stages that became ready since the last call, in run order."""
        new, self._new = self._new, []
        return sorted(new, key=self._index.__getitem__)
