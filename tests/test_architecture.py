"""The shape of the code, as docs/architecture.md describes it: layers that import one way,
no import cycles, no private names across modules, and modules and functions of readable size.

These read the source with `ast`; nothing is imported or run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pivot"

# Lowest first. A module may import modules of its own layer or below, never above.
# A name ending in ".*" covers a package and every module in it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("pivot.errors", "pivot.records", "pivot.layout", "pivot.atomic", "pivot.yamlio",
                     "pivot.version", "pivot.confine")),
    ("storage", ("pivot.state", "pivot.walk", "pivot.hashing", "pivot.cache", "pivot.lock", "pivot.git",
                 "pivot.history", "pivot.gitignore", "pivot.tracked", "pivot.runlock", "pivot.importing",
                 "pivot.memolog", "pivot.reporter", "pivot.config", "pivot.project", "pivot.remote_config",
                 "pivot.runrecord", "pivot.uptodate", "pivot.listings")),
    ("definition", ("pivot.outputs", "pivot.limits", "pivot.stage", "pivot.sweep", "pivot.params",
                    "pivot.overrides", "pivot.graph", "pivot.fingerprint.*")),
    ("engine", ("pivot.status", "pivot.repo", "pivot.workspace", "pivot.executor.*", "pivot.run", "pivot.budget",
                "pivot.planning", "pivot.runsetup",
                "pivot.runcache", "pivot.backups", "pivot.landing", "pivot.speculate", "pivot.fresh", "pivot.retrieve",
                "pivot.checkout",
                "pivot.verify", "pivot.checkmemo", "pivot.metrics", "pivot.stage_table", "pivot.plots.*",
                "pivot.remote.*", "pivot.watcher")),
    ("application", ("pivot.ops.*",)),
    ("faces", ("pivot.cli.*", "pivot.hooks", "pivot", "pivot.__main__")),
]

# Seams that must stay closed even where the layers would allow them.
FORBIDDEN: list[tuple[str, str, str]] = [
    ("pivot.cache", "pivot.lock", "storage speaks in records (pivot.records), not lock files"),
    ("pivot.git", "pivot.lock", "git history reads blobs; pivot.history parses locks"),
    ("pivot.remote.*", "pivot.lock", "the remote moves objects; which ones is decided from history/records"),
    ("pivot.cli.*", "pivot.cache", "a command calls one operation (pivot.ops), never the cache"),
    ("pivot.cli.*", "pivot.state", "a command calls one operation (pivot.ops), never the state database"),
    ("pivot.cli.*", "pivot.remote.*", "a command calls one operation (pivot.ops), never remote storage"),
    ("pivot.cli.*", "pivot.lock", "a command calls one operation (pivot.ops), never lock files"),
    ("pivot.cli.*", "pivot.history", "a command calls one operation (pivot.ops), never git history"),
    ("pivot.cli.*", "pivot.repo", "a command calls one operation (pivot.ops), never loads the pipeline itself"),
]

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60


def _matches(module: str, pattern: str) -> bool:
    if pattern.endswith(".*"):
        base = pattern[:-2]
        return module == base or module.startswith(base + ".")
    return module == pattern


def layer_of(module: str) -> int | None:
    for index, (_name, patterns) in enumerate(LAYERS):
        if any(_matches(module, p) for p in patterns):
            return index
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@dataclass(frozen=True)
class Import:
    source: str
    target: str  # a pivot module
    names: tuple[str, ...]
    line: int


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve(source: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = source.split(".")
    if not _is_package(path):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(source: str, path: Path, known: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pivot"):
                    yield Import(source, _closest(alias.name, known), (), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(source, path, node)
            if not target.startswith("pivot"):
                continue
            plain = []
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:  # `from pivot import atomic`: the module itself
                    yield Import(source, sub, (), node.lineno)
                else:
                    plain.append(alias.name)
            if plain:
                yield Import(source, _closest(target, known), tuple(plain), node.lineno)


def _closest(name: str, known: dict[str, Path]) -> str:
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def all_imports() -> list[Import]:
    known = modules()
    return [imp for name, path in known.items() for imp in imports_of(name, path, known)]


def test_every_module_has_a_layer() -> None:
    missing = [m for m in modules() if layer_of(m) is None]
    assert not missing, f"add these modules to LAYERS here and to docs/architecture.md: {missing}"


def test_no_module_imports_a_layer_above_it() -> None:
    wrong = []
    for imp in all_imports():
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if src is not None and dst is not None and dst > src:
            wrong.append(f"{imp.source}:{imp.line} imports {imp.target} "
                         f"({LAYERS[src][0]} -> {LAYERS[dst][0]})")
    assert not wrong, "\n".join(wrong)


def test_closed_seams() -> None:
    wrong = [f"{imp.source}:{imp.line} imports {imp.target}: {why}"
             for imp in all_imports() for src, dst, why in FORBIDDEN
             if _matches(imp.source, src) and _matches(imp.target, dst)]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for imp in all_imports():
        if imp.target != imp.source and imp.target in graph:
            graph[imp.source].add(imp.target)
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_private_names_across_modules() -> None:
    known = modules()
    wrong = []
    for imp in all_imports():
        if any(part.startswith("_") and part != "__init__" for part in imp.target.split(".")) \
                and imp.target != imp.source:
            wrong.append(f"{imp.source}:{imp.line} imports private module {imp.target}")
        for name in imp.names:
            if name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
                wrong.append(f"{imp.source}:{imp.line} imports private name {name} from {imp.target}")
    assert known and not wrong, "\n".join(wrong)


def test_module_and_function_sizes() -> None:
    wrong = []
    for name, path in modules().items():
        text = path.read_text()
        lines = text.count("\n") + 1
        if lines > MAX_MODULE_LINES:
            wrong.append(f"{name}: {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    wrong.append(f"{name}:{node.lineno} {node.name}: {length} lines (at most {MAX_FUNCTION_LINES})")
    assert not wrong, "\n".join(wrong)


def test_exception_classes_live_in_errors() -> None:
    """Every exception class is defined in pivot/errors.py, so the error hierarchy reads in one place."""
    import builtins
    import inspect

    import pivot.errors as errors_module

    known = {n for n, c in vars(builtins).items() if inspect.isclass(c) and issubclass(c, BaseException)}
    known |= {n for n, c in vars(errors_module).items() if inspect.isclass(c) and issubclass(c, BaseException)}
    wrong = []
    for name, path in modules().items():
        if name == "pivot.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else ""
                         for b in node.bases}
                if bases & known:
                    wrong.append(f"{name}:{node.lineno} class {node.name}({', '.join(sorted(bases))})")
    assert not wrong, "move these into pivot/errors.py:\n" + "\n".join(wrong)


@pytest.mark.parametrize("source, expected", [
    ("from pivot.cache import Cache\n", ["pivot.cache"]),
    ("from pivot import atomic, stage\n", ["pivot.atomic", "pivot"]),
    ("from . import cache\n", ["pivot.cache"]),
])
def test_the_import_reader_itself(tmp_path: Path, source: str, expected: list[str]) -> None:
    """The checks above are only as good as the import reader: it must see what Python sees."""
    path = tmp_path / "mod.py"
    path.write_text(source)
    known = {"pivot": PACKAGE / "__init__.py", "pivot.cache": PACKAGE / "cache.py",
             "pivot.atomic": PACKAGE / "atomic.py", "pivot.mod": path}
    assert [i.target for i in imports_of("pivot.mod", path, known)] == expected


def test_a_cycle_is_found() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
