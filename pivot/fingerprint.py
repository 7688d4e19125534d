"""Code fingerprints: what a stage's code is, as a manifest of everything it reaches.

A stage's fingerprint covers its own normalised AST and, recursively, the user functions,
classes, constants and modules it reaches; third-party and standard-library code count by
distribution version. Each entry is keyed by kind, module and qualified name:

    func:pipeline.train        hash of the normalised AST of the def
    class:models.Net           hash of the normalised class body
    const:pipeline.THRESHOLD   hash of the value
    pkg:numpy                  version of the distribution
    python:stdlib              the Python version (major.minor)

The fingerprint is the hash of the sorted manifest. Per-module AST summaries are cached in
the state database by the source file's (size, mtime).
"""

from __future__ import annotations

import ast
import enum
import functools
import os
import pickle
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pivot.hashing import RACY_NS, hash_bytes
from pivot.state import State

FP_SCHEMA = 1
_CONST_TYPES = (int, float, complex, str, bytes, bool, type(None), range, slice)


@dataclass(frozen=True)
class Fingerprint:
    digest: str
    manifest: dict[str, str]
    notes: tuple[str, ...] = ()


# -- AST summaries ------------------------------------------------------------


def _strip_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[1:] or [ast.Pass()]
    return body


def _is_stage_decorator(node: ast.expr) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    return (isinstance(target, ast.Name) and target.id == "stage") or (
        isinstance(target, ast.Attribute) and target.attr == "stage"
    )


class _Normaliser(ast.NodeTransformer):
    def _defn(self, node: Any) -> Any:
        node.body = _strip_docstring(node.body)
        if hasattr(node, "decorator_list"):
            node.decorator_list = [d for d in node.decorator_list if not _is_stage_decorator(d)]
        self.generic_visit(node)
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _defn


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _refs(node: ast.AST) -> list[str]:
    """Global names and dotted chains (`helpers.fn`) a definition reads."""
    found: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Load):
            dotted = _dotted(sub)
            if dotted:
                found.add(dotted)
        elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            found.add(sub.id)
    return sorted(found)


def _first_line(node: ast.AST) -> int:
    decos = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decos)])  # type: ignore[attr-defined]


def summarise(source: str, filename: str) -> dict[str, list[Any]]:
    """{'f:<first line>': [hash, refs], 'c:<qualname>': [hash, refs]} for every def/lambda/class."""
    tree = ast.parse(source, filename)
    out: dict[str, list[Any]] = {}

    def add(key: str, node: ast.AST) -> None:
        norm = _Normaliser().visit(_copy(node))
        digest = hash_bytes(ast.dump(norm).encode())
        refs = _refs(norm)
        if key in out:  # several lambdas on one line: count them all
            digest = hash_bytes((out[key][0] + digest).encode())
            refs = sorted(set(out[key][1]) | set(refs))
        out[key] = [digest, refs]

    def visit(node: ast.AST, qual: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                add(f"f:{_first_line(child)}", child)
                visit(child, f"{qual}{child.name}.<locals>.")
            elif isinstance(child, ast.ClassDef):
                add(f"c:{qual}{child.name}", child)
                visit(child, f"{qual}{child.name}.")
            elif isinstance(child, ast.Lambda):
                add(f"f:{child.lineno}", child)
                visit(child, qual)
            else:
                visit(child, qual)

    visit(tree, "")
    return out


def _copy(node: ast.AST) -> ast.AST:
    import copy

    return copy.deepcopy(node)


# -- value hashing ------------------------------------------------------------


def _canonical(value: Any, depth: int = 0) -> str | None:
    """A stable text for plain data; None when the value is not plain data."""
    if depth > 50:
        return None
    if isinstance(value, _CONST_TYPES):
        return f"{type(value).__name__}:{value!r}"
    if isinstance(value, (tuple, list)):
        items = [_canonical(v, depth + 1) for v in value]
        return None if None in items else f"{type(value).__name__}[{','.join(items)}]"  # type: ignore[arg-type]
    if isinstance(value, (set, frozenset)):
        items = [_canonical(v, depth + 1) for v in value]
        return None if None in items else f"{type(value).__name__}{{{','.join(sorted(items))}}}"  # type: ignore[arg-type]
    if isinstance(value, dict):
        pairs = [(_canonical(k, depth + 1), _canonical(v, depth + 1)) for k, v in value.items()]
        if any(k is None or v is None for k, v in pairs):
            return None
        return "dict{" + ",".join(sorted(f"{k}={v}" for k, v in pairs)) + "}"  # type: ignore[str-format]
    return None


class Fingerprinter:
    def __init__(self, root: Path, state: State | None = None) -> None:
        self.root = str(root)
        self.state = state
        self._summaries: dict[str, dict[str, list[Any]] | None] = {}
        # id(obj) -> (entries {key: hash}, children, notes); obj kept alive in _keep
        self._memo: dict[int, tuple[dict[str, str], list[Any], list[str]]] = {}
        self._keep: list[Any] = []
        self._dists: dict[str, list[str]] | None = None
        self._versions: dict[str, tuple[str, str]] = {}

    # -- where code lives ------------------------------------------------
    def is_user_file(self, filename: str | None) -> bool:
        if not filename:
            return False
        full = os.path.abspath(filename)
        if not full.startswith(self.root + os.sep):
            return False
        return "site-packages" not in full and "dist-packages" not in full

    def _summary(self, filename: str) -> dict[str, list[Any]] | None:
        if filename in self._summaries:
            return self._summaries[filename]
        result: dict[str, list[Any]] | None = None
        try:
            st = os.stat(filename)
        except OSError:
            self._summaries[filename] = None
            return None
        key = f"fp{FP_SCHEMA}:{os.path.relpath(filename, self.root)}"
        cached = self.state.get_json(key) if self.state else None
        if cached and cached["stat"] == [st.st_size, st.st_mtime_ns] and cached["checked"] - st.st_mtime_ns >= RACY_NS:
            result = cached["nodes"]
        else:
            try:
                with open(filename, "rb") as f:
                    source = f.read().decode("utf-8", errors="surrogateescape")
                result = summarise(source, filename)
            except (OSError, SyntaxError, ValueError):
                result = None
            if result is not None and self.state:
                self.state.put_json(key, {"stat": [st.st_size, st.st_mtime_ns], "checked": time.time_ns(),
                                          "nodes": result})
        self._summaries[filename] = result
        return result

    # -- packages --------------------------------------------------------
    def _package_entry(self, module_name: str) -> tuple[str, str]:
        top = module_name.split(".")[0]
        if top in self._versions:
            return self._versions[top]
        if top in sys.stdlib_module_names or top == "builtins":
            entry = ("python:stdlib", f"{sys.version_info.major}.{sys.version_info.minor}")
        else:
            from importlib import metadata

            dist, version = top, None
            try:
                version = metadata.version(top)
            except metadata.PackageNotFoundError:
                if self._dists is None:
                    self._dists = metadata.packages_distributions()
                for name in self._dists.get(top, []):
                    try:
                        dist, version = name, metadata.version(name)
                        break
                    except metadata.PackageNotFoundError:
                        continue
            if version is None:
                mod = sys.modules.get(top)
                version = str(getattr(mod, "__version__", "unknown"))
            entry = (f"pkg:{dist}", version)
        self._versions[top] = entry
        return entry

    # -- objects ---------------------------------------------------------
    def fingerprint(self, func: Callable[..., Any]) -> Fingerprint:
        manifest: dict[str, str] = {}
        notes: list[str] = []
        seen: set[int] = set()
        stack: list[Any] = [func]
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            entries, children, obj_notes = self._entry(obj)
            manifest.update(entries)
            notes.extend(n for n in obj_notes if n not in notes)
            stack.extend(children)
        text = "\n".join(f"{k}={v}" for k, v in sorted(manifest.items()))
        return Fingerprint(hash_bytes(text.encode()), dict(sorted(manifest.items())), tuple(sorted(notes)))

    def _entry(self, obj: Any) -> tuple[dict[str, str], list[Any], list[str]]:
        memo = self._memo.get(id(obj))
        if memo is None:
            memo = self._compute(obj)
            self._memo[id(obj)] = memo
            self._keep.append(obj)
        return memo

    def _compute(self, obj: Any) -> tuple[dict[str, str], list[Any], list[str]]:
        if isinstance(obj, _Named):
            return self._named_value(obj)
        if isinstance(obj, functools.partial):
            return {}, [obj.func, *(_Named("partial", getattr(obj.func, "__qualname__", "?"), i, a)
                                    for i, a in enumerate((*obj.args, *obj.keywords.values())))], []
        if isinstance(obj, types.MethodType):
            return {}, [obj.__func__], []
        if isinstance(obj, types.FunctionType):
            return self._function(obj)
        if isinstance(obj, type):
            return self._class(obj)
        if isinstance(obj, types.ModuleType):
            if self.is_user_file(getattr(obj, "__file__", None)):
                return {}, [], []
            key, version = self._package_entry(obj.__name__)
            return {key: version}, [], []
        module = getattr(obj, "__module__", None)
        if isinstance(module, str) and callable(obj):
            mod = sys.modules.get(module)
            if mod is not None and not self.is_user_file(getattr(mod, "__file__", None)):
                key, version = self._package_entry(module)
                return {key: version}, [], []
        return {}, [], []

    def _function(self, func: types.FunctionType) -> tuple[dict[str, str], list[Any], list[str]]:
        code = func.__code__
        name = f"{func.__module__}.{func.__qualname__}"
        if not self.is_user_file(code.co_filename):
            key, version = self._package_entry(func.__module__ or "builtins")
            return {key: version}, [], []
        summary = self._summary(code.co_filename)
        node = summary.get(f"f:{code.co_firstlineno}") if summary else None
        notes: list[str] = []
        if node is None:
            digest = hash_bytes(_code_text(code).encode())
            refs = sorted(set(code.co_names))
            notes.append(f"{name}: source not found; fingerprinted by its bytecode (Python-version specific)")
        else:
            digest, refs = node
        children: list[Any] = []
        closure = {n: c.cell_contents for n, c in zip(code.co_freevars, func.__closure__ or ()) if _cell_ok(c)}
        for ref in refs:
            children.extend(self._resolve(ref, func.__globals__, closure, func.__module__))
        return {f"func:{name}": digest}, children, notes

    def _class(self, cls: type) -> tuple[dict[str, str], list[Any], list[str]]:
        module = sys.modules.get(cls.__module__)
        filename = getattr(module, "__file__", None)
        name = f"{cls.__module__}.{cls.__qualname__}"
        if not self.is_user_file(filename):
            key, version = self._package_entry(cls.__module__)
            return {key: version}, [], []
        summary = self._summary(filename) if filename else None
        node = summary.get(f"c:{cls.__qualname__}") if summary else None
        if node is None:
            return {f"class:{name}": "unknown"}, [], [f"{name}: class source not found; changes to it are not seen"]
        digest, refs = node
        children: list[Any] = []
        for ref in refs:
            children.extend(self._resolve(ref, vars(module), {}, cls.__module__))
        return {f"class:{name}": digest}, children, []

    def _resolve(self, ref: str, globals_: dict[str, Any], closure: dict[str, Any], module: str) -> list[Any]:
        head, *rest = ref.split(".")
        if head in closure:
            obj = closure[head]
            label = f"{module}.<closure>.{head}"
        elif head in globals_:
            obj = globals_[head]
            label = f"{module}.{head}"
        else:
            return []  # a builtin, a local, or an unbound name
        for attr in rest:
            if not isinstance(obj, types.ModuleType) or not self.is_user_file(getattr(obj, "__file__", None)):
                break
            if not hasattr(obj, attr):
                break
            label = f"{obj.__name__}.{attr}"
            obj = getattr(obj, attr)
        if isinstance(obj, (types.FunctionType, type, types.ModuleType, functools.partial, types.MethodType)) \
                or (callable(obj) and not isinstance(obj, enum.Enum)):
            return [obj]
        if isinstance(obj, enum.Enum):
            return [type(obj)]
        return [_Named("const", label, 0, obj)]

    def _named_value(self, named: _Named) -> tuple[dict[str, str], list[Any], list[str]]:
        value = named.value
        if isinstance(value, (types.FunctionType, type, functools.partial, types.MethodType)):
            return {}, [value], []
        key = f"{named.kind}:{named.label}" + (f"[{named.index}]" if named.kind == "partial" else "")
        text = _canonical(value)
        if text is not None:
            return {key: hash_bytes(text.encode())}, [], []
        children: list[Any] = []
        cls = type(value)
        if cls.__module__ not in ("builtins",):
            children.append(cls)
        try:
            return {key: hash_bytes(pickle.dumps(value, protocol=4))}, children, []
        except Exception:
            return ({key: f"unhashable:{cls.__module__}.{cls.__qualname__}"}, children,
                    [f"{named.label}: a {cls.__qualname__} value cannot be hashed; only its type is fingerprinted"])


@dataclass(frozen=True, eq=False)
class _Named:
    """A value reached through a global, closure or partial argument."""

    kind: str
    label: str
    index: int
    value: Any


def _cell_ok(cell: Any) -> bool:
    try:
        cell.cell_contents
        return True
    except ValueError:
        return False


def _code_text(code: types.CodeType) -> str:
    consts = [(_code_text(c) if isinstance(c, types.CodeType) else repr(c)) for c in code.co_consts]
    return f"{code.co_code.hex()}|{consts}|{code.co_names}|{code.co_varnames}"

