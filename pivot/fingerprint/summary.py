"""Static analysis of one source file: its per-module summary.

summarise() returns, for one source file (JSON-serialisable, cached in the state DB):
  defs:    {"f:<first line>": [digest, refs, flags], "c:<qualname>": [digest, refs, flags]}
           for every def, lambda and class (functions are found by code.co_firstlineno);
  stmts:   [[digest, refs]] for every top-level statement;
  binds:   {name: [stmt index, ...]} the top-level statements assigning a name (not imports);
  imports: {name: [level, module, attr]} top-level imports ("" attr: the module itself);
  stars:   [[level, module]] top-level `from m import *`;
  file:    digest of the whole normalised module.
refs are the free names and dotted chains a definition reads; flags record dynamic features
("call:eval", "getattr") and imports done inside functions ("import:<level>:<module>:<names>").

A large module is read one group of top-level statements at a time (`pivot.importing.group_starts`),
never as one syntax tree: a 10,000-stage module's tree is about 150 MB of Python objects. The
result is the same as from the whole tree, digest for digest (tests/test_summary_digests.py).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from typing import Any

from pivot.fingerprint.manifest import PartsDigest, entry_digest
from pivot.fingerprint.normalise import Normaliser, is_bare_string, stage_imports
from pivot.fingerprint.scopes import (
    Scope,
    arg_names,
    bindings,
    chain_head,
    defaults,
    dotted,
    module_level,
    position,
)
from pivot.importing import GROUP, GROUPED, MAX_RETRIES, group_starts

DYNAMIC_CALLS = ("eval", "exec", "compile", "__import__", "globals")
_LONE_CR = re.compile(r"\r(?!\n)")
# ast.dump of a module, around and between the dumps of its statements ("Module(body=[", ", ", …)
_ONE = ast.dump(ast.Module(body=[ast.Pass()], type_ignores=[]))
_HEAD, _TAIL = _ONE.split("Pass()")
_SEP = ast.dump(ast.Module(body=[ast.Pass(), ast.Pass()], type_ignores=[]))[len(_HEAD) + 6:-len(_TAIL) - 6]
_DYNAMIC_DOTTED = ("importlib.import_module",)


class _Acc:
    __slots__ = ("flags", "refs")

    def __init__(self) -> None:
        self.refs: set[str] = set()
        self.flags: set[str] = set()


class _Analyser(ast.NodeVisitor):
    """One pass over a normalised module: every def/lambda/class gets its digest and the free
    names it reads (with the scope that resolves each name, per Python's rules)."""

    def __init__(self, first_lines: dict[ast.AST, int]) -> None:
        self.first_lines = first_lines
        self.scopes: list[Scope] = [Scope("module")]
        self.owners: list[tuple[int, _Acc]] = []  # (index its own scope gets, accumulator)
        self.stmt: _Acc | None = None
        self.quals: list[str] = []
        self.defs: dict[str, list[Any]] = {}
        self.offset = 0  # lines before the group of statements being read
        self.last: tuple[ast.AST | None, str] = (None, "")  # the node dumped last, and its dump

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
        text = ast.dump(node)
        self.last = (node, text)
        digest = entry_digest(text)
        refs, flags = acc.refs, acc.flags
        if key in self.defs:  # two definitions found under one key (lambdas on one line): count both
            old = self.defs[key]
            digest = entry_digest(old[0] + digest)
            refs, flags = refs | set(old[1]), flags | set(old[2])
        self.defs[key] = [digest, sorted(refs), sorted(flags)]

    # -- loads -------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._ref(node.id, self._depth(node.id, position(node)))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain = dotted(node)
        if chain is None:
            self.generic_visit(node)
            return
        head = chain_head(node)
        self._ref(chain, self._depth(head.id, position(head)))

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):  # `x += 1` reads x too
            self._ref(node.target.id, self._depth(node.target.id, position(node.target)))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and self._depth(func.id, position(func)) == 0:
            if func.id in DYNAMIC_CALLS:
                self._flag(f"call:{func.id}")
            elif func.id == "getattr" and len(node.args) >= 2 and self._getattr(node):
                return
        elif dotted(func) in _DYNAMIC_DOTTED:
            self._flag(f"call:{dotted(func)}")
        self.generic_visit(node)

    def _getattr(self, node: ast.Call) -> bool:
        """getattr(mod, "name") is mod.name; a computed name is flagged. True: handled."""
        target, name = node.args[0], node.args[1]
        chain = dotted(target)
        if chain is not None and isinstance(name, ast.Constant) and isinstance(name.value, str):
            head = chain_head(target)
            self._ref(f"{chain}.{name.value}", self._depth(head.id, position(head)))
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
        for d in (*node.decorator_list, *defaults(node.args)):  # evaluated in the enclosing scope
            self.visit(d)
        self.scopes.append(bindings("function", node.body, arg_names(node.args)))
        self.quals.append(f"{node.name}.<locals>")
        for stmt in node.body:
            self.visit(stmt)
        self.quals.pop()
        self.scopes.pop()
        self.owners.pop()
        self._record(f"f:{self.first_lines.get(node, node.lineno) + self.offset}", node, acc)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        acc = _Acc()
        self.owners.append((len(self.scopes), acc))
        for d in defaults(node.args):
            self.visit(d)
        self.scopes.append(bindings("function", [node.body], arg_names(node.args)))
        self.visit(node.body)
        self.scopes.pop()
        self.owners.pop()
        self._record(f"f:{node.lineno + self.offset}", node, acc)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        acc = _Acc()
        qual = ".".join([*self.quals, node.name])
        self.owners.append((len(self.scopes), acc))
        for d in (*node.decorator_list, *node.bases, *(k.value for k in node.keywords)):
            self.visit(d)
        self.scopes.append(bindings("class", node.body))
        self.quals.append(node.name)
        for stmt in node.body:
            self.visit(stmt)
        self.quals.pop()
        self.scopes.pop()
        self.owners.pop()
        self._record(f"c:{qual}", node, acc)

    def _comprehension(self, gens: list[ast.comprehension], parts: list[ast.expr]) -> None:
        self.visit(gens[0].iter)  # the first iterable is evaluated in the enclosing scope
        self.scopes.append(bindings("function", [g.target for g in gens]))
        for i, g in enumerate(gens):
            if i:
                self.visit(g.iter)
            for cond in g.ifs:
                self.visit(cond)
        for part in parts:
            self.visit(part)
        self.scopes.pop()

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self._comprehension(node.generators, [node.elt])

    def visit_SetComp(self, node: ast.SetComp) -> None:
        self._comprehension(node.generators, [node.elt])

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> None:
        self._comprehension(node.generators, [node.elt])

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension(node.generators, [node.key, node.value])


def _stmt_imports(stmt: ast.stmt) -> Iterable[ast.Import | ast.ImportFrom]:
    for node in module_level([stmt]):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def summarise(source: str, filename: str) -> dict[str, Any]:
    """The cached facts about one module (see the module docstring)."""
    summary = _read(source, filename, None)
    if summary.names_changed():  # a decorator was read before an import that names @stage
        summary = _read(source, filename, summary.final_names())
    return summary.result()


def _read(source: str, filename: str, names: set[str] | None) -> _Summary:
    summary = _Summary(names)
    for offset, group in _groups(source, filename):
        if offset < 0:  # the whole tree after all: start again from it
            summary = _Summary(names)
            offset = 0
        summary.add(offset, group)
    return summary


def _groups(source: str, filename: str) -> Iterable[tuple[int, ast.Module]]:
    """The module's syntax trees, one group of top-level statements at a time, each with the
    number of lines before it (one group for a module under GROUPED characters). Should the
    groups not parse one by one (only a pathological file does that), the whole tree comes
    last, with -1 lines: what came before it is to be dropped."""
    if len(source) < GROUPED or _LONE_CR.search(source):  # a line end to Python, not to counting here
        yield 0, ast.parse(source, filename)
        return
    begin = line = failed = 0
    for end in [*group_starts(source), len(source)]:
        if end - begin < GROUP and end < len(source):
            continue
        chunk = source[begin:end]
        try:
            tree = ast.parse(chunk, filename)
        except (SyntaxError, ValueError):
            failed += 1
            if end == len(source) or failed > MAX_RETRIES:
                yield -1, ast.parse(source, filename)  # or the file's SyntaxError, as reading it whole
                return
            continue
        yield line, tree
        failed = 0
        line += chunk.count("\n")
        begin = end


class _Summary:
    """The summary, built statement by statement. `names`: the names of @stage, when known."""

    def __init__(self, names: set[str] | None) -> None:
        self.names = names
        self.found: set[str] = set()  # names of @stage imported so far
        self.used: set[frozenset[str]] = set()  # names decorators were compared with
        self.analyser = _Analyser({})
        self.stmts: list[list[Any]] = []
        self.binds: dict[str, list[int]] = {}
        self.imports: dict[str, list[Any]] = {}
        self.stars: list[list[Any]] = []
        self.file = PartsDigest()
        self.file.update(_HEAD)

    def final_names(self) -> set[str]:
        # a module that gets `stage` some other way (a re-export): assume the plain name is pivot's
        return self.names or self.found or {"stage"}

    def names_changed(self) -> bool:
        return any(used != self.final_names() for used in self.used)

    def add(self, offset: int, group: ast.Module) -> None:
        if self.names is None:
            self.found |= stage_imports(group.body)
        names = self.final_names()
        normaliser = Normaliser(names)
        kept = [normaliser.visit(stmt) for stmt in group.body if not is_bare_string(stmt)]
        if normaliser.decorators:
            self.used.add(frozenset(names))
        self.analyser.first_lines = normaliser.first_lines
        self.analyser.offset = offset
        for stmt in kept:
            self._statement(stmt)

    def _statement(self, stmt: ast.stmt) -> None:
        index = len(self.stmts)
        analyser = self.analyser
        analyser.stmt = _Acc()
        analyser.visit(stmt)
        text = analyser.last[1] if analyser.last[0] is stmt else ast.dump(stmt)
        self.stmts.append([entry_digest(text), sorted(analyser.stmt.refs)])
        self.file.update(_SEP + text if index else text)
        for name in bindings("module", [stmt], imports=False).bound:
            self.binds.setdefault(name, []).append(index)
        for imp in _stmt_imports(stmt):
            if isinstance(imp, ast.Import):
                for a in imp.names:
                    if a.asname:
                        self.imports[a.asname] = [0, a.name, ""]
                    else:
                        top = a.name.split(".")[0]
                        self.imports[top] = [0, top, ""]
            else:
                for a in imp.names:
                    if a.name == "*":
                        self.stars.append([imp.level, imp.module or ""])
                    else:
                        self.imports[a.asname or a.name] = [imp.level, imp.module or "", a.name]

    def result(self) -> dict[str, Any]:
        if not self.stmts:  # nothing but strings: the module reads as `pass`
            self._statement(ast.Pass())
        self.file.update(_TAIL)
        return {"defs": self.analyser.defs, "stmts": self.stmts, "binds": self.binds, "imports": self.imports,
                "stars": self.stars, "file": self.file.hexdigest()}
