"""Code fingerprints: what a stage's code is, as a manifest of everything it reaches.

A stage's fingerprint covers its own normalised AST and, recursively, the user functions,
classes, constants and modules it reaches; third-party and standard-library code count by
distribution version, never by their source. Each entry is keyed by kind, module and
qualified name, so helpers with the same name in different modules never collide:

    func:helpers.normalise     "<hash of the normalised def> helpers.py"
    class:models.Net           "<hash of the normalised class body> models.py"
    const:pipeline.THRESHOLD   "<hash of the value> pipeline.py"
    closure:pipeline.scale.k   "<hash of a closure variable (or nested function's defaults)> pipeline.py"
    module:helpers             "<hash of the whole file> helpers.py"   (conservative rules, see below)
    pkg:numpy                  "1.26.4"   (the distribution's version)
    python:stdlib              "3.11"     (the Python version; always present)

User-code values are "<digest> <file relative to the root>" so `status --explain` can name
the file. The fingerprint is the hash of the sorted manifest.

What a definition reaches is found statically, with Python's scoping rules (parameters and
assigned names are local; class bodies are not visible from methods; comprehensions have
their own scope): free names and dotted chains (`helpers.fn`, `pkg.sub.scale`). They are
then resolved against the live module globals and closures, walking attribute chains through
user modules only. Module-level values are hashed canonically (plain data directly; other
objects through their pickle reduction, but with sets sorted and code referenced by name).

Conservative rules, each reported as a note in the lock and by `status --explain`:
- a value that cannot be hashed counts by the module-level statement that assigns it;
  a closure variable that cannot be hashed counts by the function that created the closure;
  with neither, the stage is treated as changed every time;
- a user module imported inside a function, or used as a value (passed around, `getattr`
  with a computed name), counts as its whole file plus the user modules it imports;
- `eval`/`exec`/`__import__`/`globals()`/computed `getattr` are reported, not followed.

Per-module summaries (AST hashes and references) are cached in the state database by the
source file's (size, mtime). See docs/fingerprints.md.
"""

from __future__ import annotations

import ast
import copyreg
import enum
import functools
import os
import re
import sys
import time
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import xxhash

from pivot.hashing import RACY_NS, hash_bytes, hash_file
from pivot.state import State

# Bump when summaries or manifest entries are computed differently: cached summaries are
# then ignored (and every stage's fingerprint changes once).
FP_SCHEMA = 2
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
_DIGEST_CHARS = 16  # per-entry digests: 64 bits is plenty to tell versions of one entry apart
_DYNAMIC_CALLS = ("eval", "exec", "compile", "__import__", "globals")
_DYNAMIC_DOTTED = ("importlib.import_module",)
_MAX_VALUE_STEPS = 2_000_000  # objects visited while hashing one value
_MAX_VALUE_DEPTH = 200
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
# A fresh value per process: entries that must never match the lock ("treated as changed").
_NONCE = os.urandom(8).hex()


@dataclass(frozen=True)
class Fingerprint:
    digest: str
    manifest: dict[str, str]
    notes: tuple[str, ...] = ()


def _message(exc: BaseException) -> str:
    """An exception as note text: short, and without memory addresses (notes go into locks)."""
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", f"{type(exc).__name__}: {exc}")
    return text if len(text) <= 120 else text[:117] + "..."


def _digest(text: str | bytes) -> str:
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return hash_bytes(data)[:_DIGEST_CHARS]


# == Static analysis: per-module summaries ======================================================
#
# summarise() returns, for one source file (JSON-serialisable, cached in the state DB):
#   defs:    {"f:<first line>": [digest, refs, flags], "c:<qualname>": [digest, refs, flags]}
#            for every def, lambda and class (functions are found by code.co_firstlineno);
#   stmts:   [[digest, refs]] for every top-level statement;
#   binds:   {name: [stmt index, ...]} the top-level statements assigning a name (not imports);
#   imports: {name: [level, module, attr]} top-level imports ("" attr: the module itself);
#   stars:   [[level, module]] top-level `from m import *`;
#   file:    digest of the whole normalised module.
# refs are the free names and dotted chains a definition reads; flags record dynamic features
# ("call:eval", "getattr") and imports done inside functions ("import:<level>:<module>:<names>").


def _dotted(node: ast.expr) -> str | None:
    """`a.b.c` for a chain of attributes on a name; None for anything else."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _chain_head(node: ast.expr) -> ast.Name:
    while isinstance(node, ast.Attribute):
        node = node.value
    assert isinstance(node, ast.Name)
    return node


def _pos(node: ast.AST) -> tuple[int, int]:
    return getattr(node, "lineno", 0), getattr(node, "col_offset", 0)


def _first_line(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    # code.co_firstlineno of a decorated function is the line of its first decorator
    return min([node.lineno, *(d.lineno for d in node.decorator_list)])


def _stage_decorator_names(tree: ast.Module) -> set[str]:
    """Names under which this module refers to pivot's @stage: its deps/outs never count as code."""
    names: set[str] = set()
    for node in _module_level(tree.body):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in ("pivot", "pivot.stage"):
            for a in node.names:
                if a.name in ("stage", "*"):
                    names.add(a.asname or "stage")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "pivot":
                    names.add(f"{a.asname or 'pivot'}.stage")
                elif a.name == "pivot.stage":
                    names.add(f"{a.asname}.stage" if a.asname else "pivot.stage.stage")
    # a module that gets `stage` some other way (a re-export): assume the plain name is pivot's
    return names or {"stage"}


def _module_level(body: list[ast.stmt]) -> Iterable[ast.stmt]:
    """Statements executed at module level, including inside if/try/with/for blocks."""
    stack = list(reversed(body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for name in ("body", "orelse", "finalbody"):
            stack.extend(reversed(getattr(node, name, None) or []))
        for handler in getattr(node, "handlers", None) or []:
            stack.extend(reversed(handler.body))
        for case in getattr(node, "cases", None) or []:
            stack.extend(reversed(case.body))


def _clean_body(body: list[ast.stmt]) -> list[ast.stmt]:
    """Without docstrings or other bare string statements: they never change behaviour."""
    kept = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                                    and isinstance(s.value.value, str))]
    return kept or [ast.Pass()]


class _Normaliser(ast.NodeTransformer):
    """Drops what never changes behaviour: docstrings, the @stage decorator (its deps/outs are
    compared separately), function annotations (never evaluated at call time)."""

    def __init__(self, stage_names: set[str]) -> None:
        self.stage_names = stage_names
        self.in_function = 0

    def _is_stage(self, node: ast.expr) -> bool:
        return _dotted(node.func if isinstance(node, ast.Call) else node) in self.stage_names

    def visit_Module(self, node: ast.Module) -> ast.AST:
        node.body = _clean_body(node.body)
        self.generic_visit(node)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        node.first_line = _first_line(node)  # type: ignore[union-attr]  # before decorators go
        node.body = _clean_body(node.body)
        node.decorator_list = [d for d in node.decorator_list if not self._is_stage(d)]
        node.returns = None
        node.type_comment = None
        a = node.args
        for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg):
            if arg is not None:
                arg.annotation = None
                arg.type_comment = None
        self.in_function += 1
        self.generic_visit(node)
        self.in_function -= 1
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        self.in_function += 1
        self.generic_visit(node)
        self.in_function -= 1
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        node.body = _clean_body(node.body)
        node.decorator_list = [d for d in node.decorator_list if not self._is_stage(d)]
        saved, self.in_function = self.in_function, 0  # class-body annotations are evaluated (fields)
        self.generic_visit(node)
        self.in_function = saved
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if self.in_function:  # a local variable's annotation is never evaluated
            node.annotation = ast.Constant(None)
        self.generic_visit(node)
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        node.kind = None  # u"" and "" are the same string
        return node


@dataclass
class _Scope:
    kind: str  # module | function | class
    bound: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> first binding position
    glob: set[str] = field(default_factory=set)
    nonloc: set[str] = field(default_factory=set)

    def bind(self, name: str, node: ast.AST) -> None:
        pos = _pos(node)
        if name not in self.bound or pos < self.bound[name]:
            self.bound[name] = pos


def _defaults(args: ast.arguments) -> list[ast.expr]:
    return [*args.defaults, *(d for d in args.kw_defaults if d is not None)]


def _arg_names(args: ast.arguments) -> list[str]:
    return [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg)
            if a is not None]


def _bindings(kind: str, nodes: Iterable[ast.AST], params: Iterable[str] = (),
              imports: bool = True) -> _Scope:
    """The names a scope binds (Python's rule: bound anywhere in the scope means local)."""
    scope = _Scope(kind, {p: (0, 0) for p in params})
    stack = list(nodes)
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            scope.bind(n.name, n)
            stack.extend(n.decorator_list)
            if isinstance(n, ast.ClassDef):
                stack.extend([*n.bases, *(k.value for k in n.keywords)])
            else:
                stack.extend(_defaults(n.args))
            continue
        if isinstance(n, ast.Lambda):
            stack.extend(_defaults(n.args))
            continue
        if isinstance(n, _COMPREHENSIONS):
            stack.append(n.generators[0].iter)
            for sub in ast.walk(n):  # `:=` in a comprehension binds in the enclosing scope
                if isinstance(sub, ast.NamedExpr) and isinstance(sub.target, ast.Name):
                    scope.bind(sub.target.id, sub)
            continue
        if isinstance(n, ast.Name):
            if not isinstance(n.ctx, ast.Load):
                scope.bind(n.id, n)
        elif isinstance(n, ast.Global):
            scope.glob.update(n.names)
        elif isinstance(n, ast.Nonlocal):
            scope.nonloc.update(n.names)
        elif isinstance(n, ast.Import) and imports:
            for a in n.names:
                scope.bind(a.asname or a.name.split(".")[0], n)
        elif isinstance(n, ast.ImportFrom) and imports:
            for a in n.names:
                if a.name != "*":
                    scope.bind(a.asname or a.name, n)
        elif (isinstance(n, ast.ExceptHandler) and n.name) or (isinstance(n, (ast.MatchAs, ast.MatchStar)) and n.name):
            scope.bind(n.name, n)
        elif isinstance(n, ast.MatchMapping) and n.rest:
            scope.bind(n.rest, n)
        stack.extend(ast.iter_child_nodes(n))
    return scope


class _Acc:
    __slots__ = ("flags", "refs")

    def __init__(self) -> None:
        self.refs: set[str] = set()
        self.flags: set[str] = set()


class _Analyser(ast.NodeVisitor):
    """One pass over a normalised module: every def/lambda/class gets its digest and the free
    names it reads (with the scope that resolves each name, per Python's rules)."""

    def __init__(self) -> None:
        self.scopes: list[_Scope] = [_Scope("module")]
        self.owners: list[tuple[int, _Acc]] = []  # (index its own scope gets, accumulator)
        self.stmt: _Acc | None = None
        self.quals: list[str] = []
        self.defs: dict[str, list[Any]] = {}

    # -- name resolution -------------------------------------------------
    def _depth(self, name: str, pos: tuple[int, int]) -> int:
        """Index of the scope that binds `name` when read at this point (0: module/builtins)."""
        innermost = len(self.scopes) - 1
        for i in range(innermost, 0, -1):
            s = self.scopes[i]
            if s.kind == "class" and i != innermost:
                continue  # a class body is not visible from the functions inside it
            if name in s.glob:
                return 0
            if s.kind == "class":
                first = s.bound.get(name)
                if first is not None and first < pos:
                    return i
                continue
            if name in s.bound and name not in s.nonloc:
                return i
        return 0

    def _ref(self, chain: str, depth: int) -> None:
        for owner_depth, acc in self.owners:
            if owner_depth > depth:
                acc.refs.add(chain)
        if depth == 0 and self.stmt is not None:
            self.stmt.refs.add(chain)

    def _flag(self, flag: str) -> None:
        for _d, acc in self.owners:
            acc.flags.add(flag)

    def _record(self, key: str, node: ast.AST, acc: _Acc) -> None:
        digest = _digest(ast.dump(node))
        refs, flags = acc.refs, acc.flags
        if key in self.defs:  # two definitions found under one key (lambdas on one line): count both
            old = self.defs[key]
            digest = _digest(old[0] + digest)
            refs, flags = refs | set(old[1]), flags | set(old[2])
        self.defs[key] = [digest, sorted(refs), sorted(flags)]

    # -- loads -------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._ref(node.id, self._depth(node.id, _pos(node)))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain = _dotted(node)
        if chain is None:
            self.generic_visit(node)
            return
        head = _chain_head(node)
        self._ref(chain, self._depth(head.id, _pos(head)))

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):  # `x += 1` reads x too
            self._ref(node.target.id, self._depth(node.target.id, _pos(node.target)))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and self._depth(func.id, _pos(func)) == 0:
            if func.id in _DYNAMIC_CALLS:
                self._flag(f"call:{func.id}")
            elif func.id == "getattr" and len(node.args) >= 2:
                if self._getattr(node):
                    return
        elif _dotted(func) in _DYNAMIC_DOTTED:
            self._flag(f"call:{_dotted(func)}")
        self.generic_visit(node)

    def _getattr(self, node: ast.Call) -> bool:
        """getattr(mod, "name") is mod.name; a computed name is flagged. True: handled."""
        target, name = node.args[0], node.args[1]
        chain = _dotted(target)
        if chain is not None and isinstance(name, ast.Constant) and isinstance(name.value, str):
            head = _chain_head(target)
            self._ref(f"{chain}.{name.value}", self._depth(head.id, _pos(head)))
            self.visit(node.func)
            for extra in (*node.args[2:], *(k.value for k in node.keywords)):
                self.visit(extra)
            return True
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            self._flag("getattr")
        return False

    # -- imports inside functions --------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        if len(self.scopes) > 1:
            for a in node.names:
                self._flag(f"import:0:{a.name}:")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if len(self.scopes) > 1:
            names = ",".join(a.name for a in node.names if a.name != "*")
            self._flag(f"import:{node.level}:{node.module or ''}:{names}")

    # -- scopes --------------------------------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        acc = _Acc()
        self.owners.append((len(self.scopes), acc))
        for d in (*node.decorator_list, *_defaults(node.args)):  # evaluated in the enclosing scope
            self.visit(d)
        self.scopes.append(_bindings("function", node.body, _arg_names(node.args)))
        self.quals.append(f"{node.name}.<locals>")
        for stmt in node.body:
            self.visit(stmt)
        self.quals.pop()
        self.scopes.pop()
        self.owners.pop()
        self._record(f"f:{getattr(node, 'first_line', node.lineno)}", node, acc)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        acc = _Acc()
        self.owners.append((len(self.scopes), acc))
        for d in _defaults(node.args):
            self.visit(d)
        self.scopes.append(_bindings("function", [node.body], _arg_names(node.args)))
        self.visit(node.body)
        self.scopes.pop()
        self.owners.pop()
        self._record(f"f:{node.lineno}", node, acc)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        acc = _Acc()
        qual = ".".join([*self.quals, node.name])
        self.owners.append((len(self.scopes), acc))
        for d in (*node.decorator_list, *node.bases, *(k.value for k in node.keywords)):
            self.visit(d)
        self.scopes.append(_bindings("class", node.body))
        self.quals.append(node.name)
        for stmt in node.body:
            self.visit(stmt)
        self.quals.pop()
        self.scopes.pop()
        self.owners.pop()
        self._record(f"c:{qual}", node, acc)

    def _comprehension(self, node: ast.AST, parts: list[ast.expr]) -> None:
        gens: list[ast.comprehension] = node.generators  # type: ignore[attr-defined]
        self.visit(gens[0].iter)  # the first iterable is evaluated in the enclosing scope
        self.scopes.append(_bindings("function", [g.target for g in gens]))
        for i, g in enumerate(gens):
            if i:
                self.visit(g.iter)
            for cond in g.ifs:
                self.visit(cond)
        for part in parts:
            self.visit(part)
        self.scopes.pop()

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self._comprehension(node, [node.elt])

    visit_SetComp = visit_GeneratorExp = visit_ListComp  # type: ignore[assignment]

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension(node, [node.key, node.value])


def _stmt_imports(stmt: ast.stmt) -> Iterable[ast.Import | ast.ImportFrom]:
    for node in _module_level([stmt]):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def summarise(source: str, filename: str) -> dict[str, Any]:
    """The cached facts about one module (see the comment above)."""
    tree = ast.parse(source, filename)
    tree = _Normaliser(_stage_decorator_names(tree)).visit(tree)
    analyser = _Analyser()
    stmts: list[list[Any]] = []
    binds: dict[str, list[int]] = {}
    imports: dict[str, list[Any]] = {}
    stars: list[list[Any]] = []
    for index, stmt in enumerate(tree.body):
        analyser.stmt = _Acc()
        analyser.visit(stmt)
        stmts.append([_digest(ast.dump(stmt)), sorted(analyser.stmt.refs)])
        for name in _bindings("module", [stmt], imports=False).bound:
            binds.setdefault(name, []).append(index)
        for imp in _stmt_imports(stmt):
            if isinstance(imp, ast.Import):
                for a in imp.names:
                    if a.asname:
                        imports[a.asname] = [0, a.name, ""]
                    else:
                        top = a.name.split(".")[0]
                        imports[top] = [0, top, ""]
            else:
                for a in imp.names:
                    if a.name == "*":
                        stars.append([imp.level, imp.module or ""])
                    else:
                        imports[a.asname or a.name] = [imp.level, imp.module or "", a.name]
    return {"defs": analyser.defs, "stmts": stmts, "binds": binds, "imports": imports,
            "stars": stars, "file": _digest(ast.dump(tree))}


# == Runtime resolution ============================================================================


class _Item:
    """Something reached: code ("obj"), a bound value ("const"/"closure"), a whole user module
    ("file", obj = module name), or an installed package ("pkg", obj = module name)."""

    __slots__ = ("key", "kind", "label", "module", "name", "obj")

    def __init__(self, kind: str, label: str, obj: Any, module: str = "", name: str = "") -> None:
        self.kind = kind
        self.label = label
        self.obj = obj
        self.module = module  # values: the module of the binding; files: who uses the module
        self.name = name  # values: the binding's name; closures: the qualname of the function holding it
        # identity for the memo and the walk (computed once: the walk is the hot loop)
        self.key = (kind, label, id(obj), module, name)


@dataclass
class _Node:
    entries: dict[str, str]
    children: list[_Item]
    notes: list[str]


class _Unhashable(Exception):
    pass


def _identity(obj: Any) -> tuple[str, str]:
    """(module, qualname) of a function or class. A function is named by its code, not by
    __module__/__qualname__, which functools.wraps copies onto wrappers."""
    if isinstance(obj, types.FunctionType):
        return obj.__globals__.get("__name__") or obj.__module__ or "", obj.__code__.co_qualname
    return getattr(obj, "__module__", None) or "", getattr(obj, "__qualname__", "<?>")


def _importable(obj: Any) -> bool:
    """True when module.qualname names the object (so it is its key, however it was reached)."""
    return "<" not in _identity(obj)[1]


def _cells(func: types.FunctionType) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, cell in zip(func.__code__.co_freevars, func.__closure__ or ()):
        try:
            out[name] = cell.cell_contents
        except ValueError:  # an empty cell: the variable is not assigned yet
            continue
    return out


def _code_text(code: types.CodeType) -> str:
    consts = [(_code_text(c) if isinstance(c, types.CodeType) else repr(c)) for c in code.co_consts]
    return f"{code.co_code.hex()}|{consts}|{code.co_names}|{code.co_varnames}"


def _all_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _all_names(const)
    return names


def _merge(values: set[str]) -> str:
    """One manifest value for a key reached with different values (e.g. two closures made by one
    factory): order-independent, so the manifest never depends on traversal order."""
    if len(values) == 1:
        return next(iter(values))
    ordered = sorted(values)
    where = ordered[0].partition(" ")[2]
    return f"{_digest(chr(10).join(ordered))} {where}".rstrip()


class Fingerprinter:
    def __init__(self, root: Path, state: State | None = None) -> None:
        self.root = str(root)
        self.state = state
        # Created before the pipeline is imported (Repo does so): a file modified after this
        # may no longer be the code that was imported, and that workers run.
        self._started_ns = time.time_ns()
        self._edited: set[str] = set()
        self._summaries: dict[str, dict[str, Any] | None] = {}
        self._memo: dict[tuple[str, str, int, str, str], _Node] = {}
        self._keep: list[Any] = []  # objects whose id() is in _memo stay alive
        self._user: dict[str, bool] = {}
        self._rel: dict[str, str] = {}
        self._module_files: dict[str, str | None] = {}
        self._user_modules: dict[str, bool] = {}
        self._origins: dict[tuple[str, str], tuple[str, str]] = {}
        self._pkgs: dict[str, list[str]] | None = None
        self._pkgs_signature: list[Any] = []
        self._pkgs_dirty = False
        self._dists: dict[str, list[str]] | None = None
        # The project's absolute path in a value (ROOT = Path(__file__).parent) differs per clone,
        # and the home directory per user: both are hashed as placeholders. Longest first: the
        # root is usually inside the home directory.
        forms = {self.root: "<root>", os.path.realpath(self.root): "<root>"}
        home = os.path.expanduser("~")
        if len(home) > 1 and home not in forms:
            forms[home] = "<home>"
        self.portable_forms = sorted(forms.items(), key=lambda f: len(f[0]), reverse=True)

    # -- public ------------------------------------------------------------
    def fingerprint(self, func: Callable[..., Any]) -> Fingerprint:
        found: dict[str, str] = {"python:stdlib": PYTHON_VERSION}
        clashes: dict[str, set[str]] = {}  # keys reached with different values
        notes: set[str] = set()
        seen: set[tuple[str, str, int, str, str]] = set()
        stack = [self._classify(func, ".".join(_identity(func)), "const", "", "", "")]
        while stack:
            item = stack.pop()
            if item.key in seen:
                continue
            seen.add(item.key)
            node = self._node(item)
            for k, v in node.entries.items():
                old = found.setdefault(k, v)
                if old != v:
                    clashes.setdefault(k, {old}).add(v)
            if node.notes:
                notes.update(node.notes)
            stack.extend(node.children)
        self._save_packages()
        for k, vs in clashes.items():
            found[k] = _merge(vs)
        manifest = dict(sorted(found.items()))
        text = "\n".join(f"{k}={v}" for k, v in manifest.items())
        return Fingerprint(hash_bytes(text.encode()), manifest, tuple(sorted(notes)))

    def is_user_file(self, filename: str | None) -> bool:
        """Code in the project (under the root, not in a virtualenv inside it)."""
        if not filename:
            return False
        known = self._user.get(filename)
        if known is None:
            full = os.path.abspath(filename)
            known = (full.startswith(self.root + os.sep) and "site-packages" not in full
                     and "dist-packages" not in full)
            self._user[filename] = known
        return known

    # -- files and modules -------------------------------------------------
    def _relpath(self, filename: str) -> str:
        rel = self._rel.get(filename)
        if rel is None:
            rel = os.path.relpath(filename, self.root).replace(os.sep, "/")
            self._rel[filename] = rel
        return rel

    def _summary(self, filename: str | None) -> dict[str, Any] | None:
        if not filename:
            return None
        if filename in self._summaries:
            return self._summaries[filename]
        result: dict[str, Any] | None = None
        try:
            st = os.stat(filename)
        except OSError:
            self._summaries[filename] = None
            return None
        if self._started_ns < st.st_mtime_ns <= time.time_ns():  # (a future mtime: clock skew, not an edit)
            self._edited.add(filename)
        key = f"fp{FP_SCHEMA}:{self._relpath(filename)}"
        cached = self.state.get_json(key) if self.state else None
        if cached and cached["stat"] == [st.st_size, st.st_mtime_ns] and cached["checked"] - st.st_mtime_ns >= RACY_NS:
            result = cached["summary"]
        else:
            try:
                with open(filename, "rb") as f:
                    source = f.read().decode("utf-8", errors="surrogateescape")
                result = summarise(source, filename)
            except (OSError, SyntaxError, ValueError, RecursionError):
                result = None
            if result is not None and self.state:
                self.state.put_json(key, {"stat": [st.st_size, st.st_mtime_ns], "checked": time.time_ns(),
                                          "summary": result})
        self._summaries[filename] = result
        return result

    def _module_file(self, name: str) -> str | None:
        """The file of a module, without importing it (a module not loaded yet is looked for
        under the root only: anything else is not user code)."""
        if name in self._module_files:
            return self._module_files[name]
        found: str | None = None
        mod = sys.modules.get(name)
        if mod is not None:
            found = getattr(mod, "__file__", None)
            if found is None:  # a namespace package: user code if it lives under the root
                found = next((os.path.join(p, "") for p in getattr(mod, "__path__", []) if self.is_user_file(
                    os.path.join(p, "x"))), None)
        elif name:
            rel = os.path.join(*name.split("."))
            for base in [self.root, *(p for p in sys.path if p and self.is_user_file(os.path.join(p, "x")))]:
                for cand in (os.path.join(base, rel + ".py"), os.path.join(base, rel, "__init__.py")):
                    if os.path.isfile(cand):
                        found = cand
                        break
                if found:
                    break
        self._module_files[name] = found
        return found

    def _is_user_module(self, name: str) -> bool:
        known = self._user_modules.get(name)
        if known is None:
            known = self._user_modules[name] = self.is_user_file(self._module_file(name))
        return known

    def _module_summary(self, name: str) -> dict[str, Any] | None:
        filename = self._module_file(name)
        if not self.is_user_file(filename) or not filename or not filename.endswith(".py"):
            return None
        return self._summary(filename)

    def _package_of(self, name: str) -> str:
        mod = sys.modules.get(name)
        package = getattr(mod, "__package__", None) if mod is not None else None
        if package is not None:
            return package
        filename = self._module_file(name) or ""
        return name if filename.endswith("__init__.py") else name.rpartition(".")[0]

    def _absolute(self, level: int, module: str, importer: str) -> str:
        if level == 0:
            return module
        base = self._package_of(importer)
        if level > 1:
            base = base.rsplit(".", level - 1)[0]
        return f"{base}.{module}" if module else base

    def _origin(self, module: str, name: str) -> tuple[str, str]:
        """Where a module-level name was defined: follows `from x import y` through user
        modules, so a constant is keyed where it is written. ("m", ""): the module m itself."""
        known = self._origins.get((module, name))
        if known is None:
            known = self._origins[(module, name)] = self._find_origin(module, name, 0)
        return known

    def _find_origin(self, module: str, name: str, hops: int) -> tuple[str, str]:
        summary = self._module_summary(module)
        if summary is None or hops > 20 or name in summary["binds"]:
            return module, name
        imp = summary["imports"].get(name)
        if imp is not None:
            level, src, attr = imp
            absolute = self._absolute(level, src, module)
            if not attr:
                return absolute, ""
            if self._module_file(f"{absolute}.{attr}") is not None:
                return f"{absolute}.{attr}", ""
            if self._is_user_module(absolute):
                return self._find_origin(absolute, attr, hops + 1)
            return absolute, attr
        for level, src in summary["stars"]:
            absolute = self._absolute(level, src, module)
            mod = sys.modules.get(absolute)
            if mod is not None and hasattr(mod, name):
                if self._is_user_module(absolute):
                    return self._find_origin(absolute, name, hops + 1)
                return absolute, name
        return module, name

    # -- packages ------------------------------------------------------------
    def _site_signature(self) -> list[Any]:
        """Changes when packages are installed, upgraded or removed (their directories change)."""
        sig: list[Any] = [sys.version]
        for p in sys.path:
            if p and not self.is_user_file(os.path.join(p, "x")):
                try:
                    sig.append([p, os.stat(p).st_mtime_ns])
                except OSError:
                    continue
        return sig

    def _packages(self) -> dict[str, list[str]]:
        if self._pkgs is None:
            self._pkgs_signature = self._site_signature()
            cached = self.state.get_json(f"fp{FP_SCHEMA}:packages") if self.state else None
            ok = isinstance(cached, dict) and cached.get("signature") == self._pkgs_signature
            self._pkgs = dict(cached["tops"]) if ok else {}
        return self._pkgs

    def _save_packages(self) -> None:
        if self._pkgs_dirty and self.state:
            self.state.put_json(f"fp{FP_SCHEMA}:packages", {"signature": self._pkgs_signature,
                                                            "tops": self._pkgs})
        self._pkgs_dirty = False

    def _package_entry(self, module_name: str) -> tuple[str, str]:
        top = (module_name or "builtins").split(".")[0]
        if top in sys.stdlib_module_names or top in ("builtins", "__future__"):
            return "python:stdlib", PYTHON_VERSION
        pkgs = self._packages()
        if top not in pkgs:
            pkgs[top] = list(self._lookup_distribution(top))
            self._pkgs_dirty = True
        key, version = pkgs[top]
        return key, version

    def _lookup_distribution(self, top: str) -> tuple[str, str]:
        from importlib import metadata

        dist, version = top, None
        try:
            version = metadata.version(top)
        except (metadata.PackageNotFoundError, ValueError):
            if self._dists is None:
                self._dists = metadata.packages_distributions()
            for name in self._dists.get(top, []):
                try:
                    dist, version = name, metadata.version(name)
                    break
                except metadata.PackageNotFoundError:
                    continue
        if version is None:
            version = str(getattr(sys.modules.get(top), "__version__", "unknown"))
        return f"pkg:{dist}", version

    def _pkg_item(self, module_name: str) -> _Item:
        """Installed code by its distribution; code in the project (an extension module) by its file."""
        if module_name and self._is_user_module(module_name):
            return _Item("file", module_name, module_name, "")
        top = module_name.split(".")[0] or "builtins"
        return _Item("pkg", top, top)

    # -- classification -------------------------------------------------------
    def _classify(self, obj: Any, label: str, kind: str, module: str, name: str, owner: str) -> _Item:
        """What kind of thing a reached object is; data becomes a value item named `label`."""
        if isinstance(obj, types.ModuleType):
            if self._is_user_module(obj.__name__):
                return _Item("file", obj.__name__, obj.__name__, owner)
            return self._pkg_item(obj.__name__)
        if isinstance(obj, (types.FunctionType, type)):
            return _Item("obj", "" if _importable(obj) else label, obj)
        if isinstance(obj, (types.BuiltinFunctionType, types.WrapperDescriptorType,
                            types.MethodDescriptorType, types.ClassMethodDescriptorType)):
            owner_obj = getattr(obj, "__self__", None)
            if owner_obj is None or isinstance(owner_obj, types.ModuleType):
                return self._pkg_item(getattr(obj, "__module__", None) or "builtins")
        if _wraps_code(obj):
            return _Item("obj", label, obj)  # a decorator's wrapper object (lru_cache, ...)
        return _Item(kind, label, obj, module, name)

    def _resolve(self, ref: str, globals_: dict[str, Any], closure: dict[str, Any], module: str,
                 owner: str, holder: str = "") -> list[_Item]:
        """What a free name or dotted chain in `owner`'s code refers to (`holder`: the qualname of
        the function whose closure is given)."""
        head, *rest = ref.split(".")
        if head in closure:
            obj, label, kind, where, name = closure[head], f"{owner}.{head}", "closure", module, holder
        elif head in globals_:
            obj, (where, name) = globals_[head], self._origin(module, head)
            if not self._is_user_module(where):
                if not self._user_code(obj):
                    return [self._pkg_item(where)]
                where, name = module, head  # try: from mine import x / except: from theirs import x
            label, kind = f"{where}.{name}" if name else where, "const"
        else:
            return []  # a builtin (counted by the Python version) or an unbound name
        for attr in rest:
            if not isinstance(obj, types.ModuleType) or not self._is_user_module(obj.__name__) \
                    or attr.startswith("__"):
                break
            try:
                nxt = getattr(obj, attr)
            except Exception:
                break
            where, name = self._origin(obj.__name__, attr)
            if not self._is_user_module(where):
                if not self._user_code(nxt):
                    return [self._pkg_item(where)]
                where, name = obj.__name__, attr
            obj, label, kind = nxt, f"{where}.{name}" if name else where, "const"
        return [self._classify(obj, label, kind, where, name, owner)]

    # -- nodes ------------------------------------------------------------------
    def _node(self, item: _Item) -> _Node:
        key = item.key
        node = self._memo.get(key)
        if node is None:
            try:
                node = self._compute(item)
            except Exception as exc:  # a bug, or an object too strange to inspect: visible, conservative
                what = item.label or getattr(item.obj, "__qualname__", None) or type(item.obj).__qualname__
                node = self._residual(f"error:{what}", what, f"could not be fingerprinted ({_message(exc)})",
                                      None, [])
            self._memo[key] = node
            self._keep.append(item.obj)
        return node

    def _compute(self, item: _Item) -> _Node:
        if item.kind == "pkg":
            key, version = self._package_entry(item.obj)
            return _Node({key: version}, [], [])
        if item.kind == "file":
            return self._file_node(item.obj, item.module)
        if item.kind in ("const", "closure"):
            return self._value_node(item)
        obj = item.obj
        if isinstance(obj, types.FunctionType):
            return self._function_node(obj, item.label)
        if isinstance(obj, type):
            return self._class_node(obj, item.label)
        return self._wrapper_node(obj, item.label)

    def _file_node(self, name: str, owner: str) -> _Node:
        """Conservative rule: a whole user module (and the user modules it imports) counts."""
        filename = self._module_file(name)
        summary = self._module_summary(name)
        if summary is None or not filename:
            if filename and os.path.isfile(filename):  # an extension module in the project
                return _Node({f"module:{name}": f"{hash_file(filename)[:_DIGEST_CHARS]} {self._relpath(filename)}"},
                             [], [])
            return _Node({f"module:{name}": "namespace"}, [], [])
        children: list[_Item] = []
        for level, src, attr in [*summary["imports"].values(), *(s + [""] for s in summary["stars"])]:
            absolute = self._absolute(level, src, name)
            for cand in (f"{absolute}.{attr}" if attr else "", absolute):
                if cand and self._module_file(cand) is not None:
                    children.append(self._pkg_item(cand))  # a user module: its file, without a note
                    break
            else:
                children.append(self._pkg_item(absolute))
        rel = self._relpath(filename)
        notes = [f"{owner}: uses module {name} as a whole (imported in a function, or as a value); "
                 f"all of {rel} counts"] if owner else []
        digest = self._unless_edited(filename, summary["file"], notes)
        return _Node({f"module:{name}": f"{digest} {rel}"}, children, notes)

    def _function_node(self, func: types.FunctionType, label: str) -> _Node:
        code = func.__code__
        module, qualname = _identity(func)
        user = self.is_user_file(code.co_filename)
        if not user and not (self._is_user_module(module) and not os.path.isfile(code.co_filename)):
            return self._foreign_function(func, module)
        key = f"{module}.{qualname}" if "<" not in qualname or not label else label
        summary = self._summary(code.co_filename) if user else None
        found = summary["defs"].get(f"f:{code.co_firstlineno}") if summary else None
        notes: list[str] = []
        if found is None:
            digest, refs, flags = _digest(_code_text(code)), sorted(_all_names(code)), []
            notes.append(f"{key}: source not found; fingerprinted by its bytecode (specific to this Python version)")
            filename = self._module_file(module) or code.co_filename
        else:
            digest, refs, flags = found
            filename = code.co_filename
        digest = self._unless_edited(filename, digest, notes)
        closure = _cells(func)
        children: list[_Item] = []
        for ref in refs:
            children.extend(self._resolve(ref, func.__globals__, closure, module, key, qualname))
        if "<" in qualname and (func.__defaults__ or func.__kwdefaults__):
            # defaults of a nested function are evaluated where it is created, like a closure
            children.append(_Item("closure", f"{key}.<defaults>", (func.__defaults__, func.__kwdefaults__),
                                  module, qualname))
        flag_children, flag_notes = self._flags(flags, func, key)
        rel = self._relpath(filename) if self.is_user_file(filename) else filename
        return _Node({f"func:{key}": f"{digest} {rel}"}, children + flag_children, notes + flag_notes)

    def _foreign_function(self, func: types.FunctionType, module: str) -> _Node:
        """Installed code counts by version; user code it holds still counts: what a decorator
        wraps, and registries in its closure or attributes (functools.singledispatch)."""
        key, version = self._package_entry(module or "builtins")
        held = [getattr(func, "__wrapped__", None), *_cells(func).values(), *vars(func).values()]
        children = [_Item("obj", "", obj) for obj in _shallow(held) if self._owned(obj)]
        return _Node({key: version}, children, [])

    def _user_code(self, obj: Any) -> bool:
        """A function, class or module of the project (whatever the import statements say)."""
        if isinstance(obj, types.ModuleType):
            return self._is_user_module(obj.__name__)
        return isinstance(obj, (types.FunctionType, type)) and self._owned(obj)

    def _owned(self, obj: Any) -> bool:
        code = getattr(obj, "__code__", None)
        if code is not None:
            return self.is_user_file(code.co_filename)
        return self._is_user_module(getattr(obj, "__module__", "") or "")

    def _flags(self, flags: list[str], func: types.FunctionType, key: str) -> tuple[list[_Item], list[str]]:
        """Dynamic features found in the code: conservative rules and notes."""
        children: list[_Item] = []
        notes: list[str] = []
        for flag in flags:
            kind, _, rest = flag.partition(":")
            if kind == "import":
                level, src, names = rest.split(":", 2)
                children.extend(self._local_import(int(level), src, names, _identity(func)[0], key))
            elif kind == "call" and (rest not in _DYNAMIC_CALLS or rest not in func.__globals__):
                notes.append(f"{key}: calls {rest}(); code reached that way is not fingerprinted")
            elif kind == "getattr":
                notes.append(f"{key}: getattr() with a computed name; what it reaches is not fingerprinted")
        return children, notes

    def _local_import(self, level: int, src: str, names: str, module: str, key: str) -> list[_Item]:
        """A module imported inside a function: user modules count whole, others by version."""
        absolute = self._absolute(level, src, module)
        found = [f"{absolute}.{n}" for n in names.split(",") if n and self._module_file(f"{absolute}.{n}")]
        out: list[_Item] = []
        for cand in [absolute, *found]:
            out.append(_Item("file", cand, cand, key) if self._is_user_module(cand) else self._pkg_item(cand))
        return out

    def _class_node(self, cls: type, label: str) -> _Node:
        module = cls.__module__
        filename = self._module_file(module)
        if not self.is_user_file(filename):
            key, version = self._package_entry(module)
            return _Node({key: version}, [], [])
        key = f"{module}.{cls.__qualname__}" if _importable(cls) or not label else label
        summary = self._summary(filename)
        found = summary["defs"].get(f"c:{cls.__qualname__}") if summary else None
        globals_ = vars(sys.modules[module]) if module in sys.modules else {}
        children: list[_Item] = [self._classify(b, "", "const", "", "", key) for b in cls.__bases__
                                 if b is not object]
        if type(cls) is not type:
            children.append(self._classify(type(cls), "", "const", "", "", key))
        notes: list[str] = []
        if found is not None:
            digest, refs, _flags = found
        else:  # made by a call (namedtuple, Enum("C", ...), make_dataclass): the statement counts
            stmt = self._statement(module, cls.__name__) or self._statement(*_split_label(label))
            if stmt is None:
                return self._residual(f"class:{key}", key, f"the source of class {cls.__qualname__} "
                                      "was not found", filename, children)
            digest, refs = stmt
        for ref in refs:
            children.extend(self._resolve(ref, globals_, {}, module, key))
        extra = self._class_runtime(cls, key, children)
        if extra:
            digest = _digest(f"{digest}|{extra}")
        digest = self._unless_edited(filename, digest, notes)
        return _Node({f"class:{key}": f"{digest} {self._relpath(filename)}"}, children, notes)  # type: ignore[arg-type]

    def _class_runtime(self, cls: type, key: str, children: list[_Item]) -> str:
        """The class's attributes as they are after import, so assignments made outside its body
        (`Model.layers = 5`, `Model.fit = fast_fit`) count: plain data by value, user functions
        not defined in the body by reference (their code is followed)."""
        parts: list[str] = []
        own = f"{cls.__qualname__}."
        for name, value in vars(cls).items():
            if name.startswith("__") and name.endswith("__"):
                continue
            raw = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            if isinstance(raw, types.FunctionType):
                module, qualname = _identity(raw)
                if (module != cls.__module__ or not qualname.startswith(own)) and self._owned(raw):
                    parts.append(f"{name}=fn:{module}.{qualname}")
                    children.append(_Item("obj", "" if "<" not in qualname else f"{key}.{name}", raw))
            elif _plain(raw):
                parts.append(f"{name}={_ValueHasher(self, key).digest(raw)}")
        return _digest(";".join(parts)) if parts else ""

    def _wrapper_node(self, obj: Any, label: str) -> _Node:
        """A callable wrapping user code (functools.lru_cache, ...): the wrapped function counts,
        and the wrapper by its package."""
        wrapped = obj.__wrapped__
        children = [_Item("obj", "" if _importable(wrapped) else label, wrapped)]
        children.append(self._pkg_item(type(obj).__module__))
        return _Node({}, children, [])

    def _statement(self, module: str, name: str) -> tuple[str, list[str]] | None:
        """Digest and refs of the top-level statements that assign `name` in `module`."""
        summary = self._module_summary(module) if module and name else None
        if summary is None or name not in summary["binds"]:
            return None
        parts = [summary["stmts"][i] for i in summary["binds"][name]]
        digest = parts[0][0] if len(parts) == 1 else _digest("".join(p[0] for p in parts))
        return digest, sorted({r for p in parts for r in p[1]})

    def _unless_edited(self, filename: str, digest: str, notes: list[str]) -> str:
        """The digest read from a file, unless the file changed since the run began: then the
        code that was imported (and runs) may differ from it, so it counts as changed."""
        if filename not in self._edited:
            return digest
        notes.append(f"{self._relpath(filename)}: modified while pivot was running; its code counts "
                     "as changed until the next run")
        return f"changed-{_NONCE}"

    def _residual(self, key: str, label: str, why: str, filename: str | None, children: list[_Item]) -> _Node:
        """Nothing sound to hash: treated as changed on every run, and said so."""
        rel = self._relpath(filename) if filename and self.is_user_file(filename) else ""
        note = (f"{label}: {why}; the stage is treated as changed on every run "
                "(see docs/fingerprints.md)")
        return _Node({key: f"changed-{_NONCE} {rel}".rstrip()}, children, [note])

    def _value_node(self, item: _Item) -> _Node:
        value = item.obj
        key = f"{item.kind}:{item.label}"
        filename = self._module_file(item.module) if item.module else None
        rel = self._relpath(filename) if filename and self.is_user_file(filename) else ""
        hasher = _ValueHasher(self, item.label)
        try:
            digest = hasher.digest(value)
        except _Unhashable as exc:
            return self._unhashable(item, value, str(exc), filename, rel)
        if type(value).__module__ != "builtins":
            hasher.children.append(self._classify(type(value), "", "const", "", "", item.label))
        return _Node({key: f"{digest} {rel}".rstrip()}, hasher.children, [])

    def _unhashable(self, item: _Item, value: Any, why: str, filename: str | None, rel: str) -> _Node:
        key = f"{item.kind}:{item.label}"
        what = f"a {type(value).__module__}.{type(value).__qualname__} value cannot be hashed ({why})"
        children = [self._classify(type(value), "", "const", "", "", item.label)]
        if item.kind == "const":
            stmt = self._statement(item.module, item.name)
            if stmt is not None:
                digest, refs = stmt
                globals_ = vars(sys.modules[item.module]) if item.module in sys.modules else {}
                for ref in refs:
                    children.extend(self._resolve(ref, globals_, {}, item.module, item.label))
                notes = [f"{item.label}: {what}; the statement assigning it in {rel} counts instead"]
                if filename:
                    digest = self._unless_edited(filename, digest, notes)
                return _Node({key: f"stmt-{digest} {rel}"}, children, notes)
        elif item.kind == "closure":
            creator = self._creator(item)
            if creator is not None:
                children.append(creator)
                note = (f"{item.label}: {what}; the function that created the closure, "
                        f"{'.'.join(_identity(creator.obj))}, counts instead")
                return _Node({key: f"creator {rel}".rstrip()}, children, [note])
        return self._residual(key, item.label, what, filename, children)

    def _creator(self, item: _Item) -> _Item | None:
        """The function whose call made a closure: `outer` for `outer.<locals>.inner`."""
        if ".<locals>." not in item.name:
            return None
        target: Any = sys.modules.get(item.module)
        for part in item.name.rsplit(".<locals>.", 1)[0].split("."):
            target = getattr(target, part, None)
        return _Item("obj", "", target) if isinstance(target, types.FunctionType) else None


def _shallow(values: Iterable[Any]) -> Iterable[Any]:
    """Functions and classes among `values` and inside containers among them (one level)."""
    for value in values:
        if isinstance(value, (types.FunctionType, type)):
            yield value
        elif isinstance(value, (dict, types.MappingProxyType)):
            yield from (v for v in (*value.keys(), *value.values()) if isinstance(v, (types.FunctionType, type)))
        elif isinstance(value, (list, tuple, set, frozenset)):
            yield from (v for v in value if isinstance(v, (types.FunctionType, type)))


def _plain(value: Any, depth: int = 0) -> bool:
    """Plain data (what a class attribute usually is): hashed with the class."""
    if value is None or type(value) in (bool, int, float, complex, str, bytes, range):
        return True
    if depth < 5 and type(value) in (tuple, list, set, frozenset):
        return all(_plain(v, depth + 1) for v in value)
    if depth < 5 and type(value) is dict:
        return all(_plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items())
    return False


def _wraps_code(obj: Any) -> bool:
    """A callable object wrapping a function or class (functools.lru_cache and the like)."""
    if isinstance(obj, (functools.partial, types.MethodType)):
        return False
    try:
        return callable(obj) and isinstance(getattr(obj, "__wrapped__", None), (types.FunctionType, type))
    except Exception:  # a proxy whose attribute access fails: treat it as a value
        return False


def _split_label(label: str) -> tuple[str, str]:
    module, _, name = label.rpartition(".")
    return module, name


class _ValueHasher:
    """A canonical hash of a value: plain data directly, other objects through their pickle
    reduction; sets sorted (their order varies between processes), code by reference."""

    def __init__(self, fp: Fingerprinter, label: str) -> None:
        self.fp = fp
        self.label = label
        self.children: list[_Item] = []
        self.active: set[int] = set()
        self.steps = 0

    def _portable(self, text: str) -> str:
        """The project root inside a string as `<root>` (a clone elsewhere has the same value),
        the home directory as `<home>`."""
        for form, placeholder in self.fp.portable_forms:
            if form in text:
                text = text.replace(form, placeholder)
        return text

    def digest(self, value: Any) -> str:
        h = xxhash.xxh3_128()
        self.feed(h, value, 0)
        return h.hexdigest()[:_DIGEST_CHARS]

    def feed(self, h: Any, v: Any, depth: int) -> None:
        self.steps += 1
        if depth > _MAX_VALUE_DEPTH or self.steps > _MAX_VALUE_STEPS:
            raise _Unhashable("too deeply nested or too large")
        t = type(v)
        if v is None or t in (bool, int, float, complex, range, slice, type(Ellipsis)):
            h.update(f"{t.__name__}:{v!r};".encode())
        elif t is str:
            data = self._portable(v).encode("utf-8", "surrogatepass")
            h.update(b"s%d:" % len(data))
            h.update(data)
        elif t in (bytes, bytearray):
            h.update(b"b%d:" % len(v))
            h.update(v)
        elif isinstance(v, PurePath):
            h.update(f"{t.__name__}:{self._portable(str(v))};".encode("utf-8", "surrogatepass"))
        elif not self._code(h, v, depth):
            if id(v) in self.active:
                h.update(b"<cycle>")
                return
            self.active.add(id(v))
            try:
                self._container(h, v, t, depth)
            finally:
                self.active.discard(id(v))

    def _container(self, h: Any, v: Any, t: type, depth: int) -> None:
        if t in (list, tuple):
            h.update(b"%s[%d:" % (t.__name__.encode(), len(v)))
            for x in v:
                self.feed(h, x, depth + 1)
            h.update(b"]")
        elif t in (set, frozenset):
            parts = []
            for x in v:
                sub = xxhash.xxh3_128()
                self.feed(sub, x, depth + 1)
                parts.append(sub.digest())
            h.update(b"%s{%d:" % (t.__name__.encode(), len(parts)))
            h.update(b"".join(sorted(parts)))
        elif t is dict:
            h.update(b"dict{%d:" % len(v))
            for k, x in v.items():  # insertion order: iterating a dict is ordered
                self.feed(h, k, depth + 1)
                self.feed(h, x, depth + 1)
            h.update(b"}")
        elif isinstance(v, enum.Enum):
            self._child(type(v))
            h.update(f"enum:{t.__module__}.{t.__qualname__}.{v.name};".encode())
        elif t is functools.partial:
            h.update(b"partial(")
            for x in (v.func, v.args, v.keywords):
                self.feed(h, x, depth + 1)
            h.update(b")")
        elif t is types.MethodType:
            h.update(b"method(")
            self.feed(h, v.__self__, depth + 1)
            self.feed(h, v.__func__, depth + 1)
            h.update(b")")
        else:
            self._reduce(h, v, depth)

    def _reduce(self, h: Any, v: Any, depth: int) -> None:
        t = type(v)
        self._child(t)
        try:
            reducer = copyreg.dispatch_table.get(t)
            rv = reducer(v) if reducer is not None else v.__reduce_ex__(4)
        except Exception as exc:
            raise _Unhashable(_message(exc)) from None
        if isinstance(rv, str):
            h.update(f"global:{t.__module__}.{rv};".encode())
            return
        if not isinstance(rv, tuple) or len(rv) < 2:
            raise _Unhashable("unusual pickle reduction")
        func, args, state, items, pairs = (*rv, None, None, None)[:5]
        h.update(b"reduce(")
        self.feed(h, func, depth + 1)
        self.feed(h, args, depth + 1)
        self.feed(h, state, depth + 1)
        self.feed(h, list(items) if items is not None else None, depth + 1)
        self.feed(h, list(pairs) if pairs is not None else None, depth + 1)
        h.update(b")")

    def _child(self, obj: Any) -> None:
        self.children.append(self.fp._classify(obj, "", "const", "", "", self.label))

    def _code(self, h: Any, v: Any, depth: int) -> bool:
        """Functions, classes and modules inside a value: by name, their code counted separately."""
        if isinstance(v, types.FunctionType):
            name = ".".join(_identity(v))
            if not _importable(v) and self.fp._owned(v):
                # a lambda in a dict: named after the value, its code and closure hashed in place
                label = f"{self.label}.{v.__name__}"
                self.children.append(_Item("obj", label, v))
                node = self.fp._node(_Item("obj", label, v))
                h.update(f"fn:{name}:{next(iter(node.entries.values()), '')};".encode())
                self.feed(h, tuple(_cells(v).values()), depth + 1)
                self.feed(h, (v.__defaults__, v.__kwdefaults__), depth + 1)
                return True
            self.children.append(_Item("obj", "", v))
            h.update(f"fn:{name};".encode())
            return True
        if isinstance(v, type):
            self._child(v)
            h.update(f"cls:{v.__module__}.{v.__qualname__};".encode())
            return True
        if isinstance(v, types.ModuleType):
            self._child(v)
            h.update(f"mod:{v.__name__};".encode())
            return True
        if isinstance(v, types.BuiltinFunctionType) and (v.__self__ is None or isinstance(v.__self__, types.ModuleType)):
            self._child(v)
            h.update(f"bfn:{v.__module__}.{v.__qualname__};".encode())
            return True
        return False
