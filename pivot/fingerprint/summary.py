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
from typing import Any, NamedTuple

import xxhash

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
from pivot.importing import GROUPED, MAX_RETRIES, ends_group, group_starts

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
        self.records: list[list[Any]] = []  # [key, digest, refs, flags] of each definition
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
        """One definition, in the order found (`add_def` merges two found under one key)."""
        text = ast.dump(node)
        self.last = (node, text)
        self.records.append([key, entry_digest(text), sorted(acc.refs), sorted(acc.flags)])

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
        self._record(f"f:{self.first_lines.get(node, node.lineno)}", node, acc)

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
        self._record(f"f:{node.lineno}", node, acc)

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


GROUP_SCHEMA = 2  # bump when what a GroupMemo entry holds, or its file's format (pivot.memolog), changes


class GroupMemo:
    """Summaries of the groups of top-level statements of a large module, by the digest of each
    group's exact text, so that an edit reads again only the groups it changed. An entry is a
    function of the group's text and of the names of @stage it was read with (kept in the entry
    and compared) alone: line numbers in it are relative to the group. `old`: entries remembered;
    `new`: this version's groups (found in `old` or read now), to remember next; `read`: how many
    groups were read now, `fresh`: their keys."""

    def __init__(self, old: dict[str, Any] | None = None) -> None:
        self.old = old or {}
        self.new: dict[str, Any] = {}
        self.read = 0
        self.fresh: set[str] = set()  # keys of the entries made now (to append to the memo's file)

    def known(self, key: str) -> bool:
        """The group was read (so it parses) before."""
        return key in self.new or key in self.old

    def find(self, key: str) -> list[Any] | None:
        return self.new.get(key) or self.old.get(key)


def group_key(chunk: str) -> str:
    return xxhash.xxh3_128_hexdigest(chunk.encode("utf-8", "surrogatepass"))


def summarise(source: str, filename: str, memo: GroupMemo | None = None) -> dict[str, Any]:
    """The cached facts about one module (see the module docstring). With `memo`, the groups of a
    large module it knows are not read again (see GroupMemo)."""
    summary = _read(source, filename, None, memo)
    if summary.names_changed():  # a decorator was read before an import that names @stage
        summary = _read(source, filename, summary.final_names(), memo)
    return summary.result()


def _read(source: str, filename: str, names: set[str] | None, memo: GroupMemo | None) -> _Summary:
    summary = _Summary(names)
    for group in _groups(source, filename, memo):
        if group.line < 0:  # the whole tree after all: start again from it
            summary = _Summary(names)
            group = group._replace(line=0)
        summary.add(group, filename, memo)
    return summary


class _Group(NamedTuple):
    line: int  # lines before the group (-1: the whole module, replacing the groups before)
    chunk: str  # its text ("" for a whole module read as one tree)
    key: str  # group_key of the text ("": not to be remembered)
    tree: ast.Module | None  # None: not parsed (the memo knows the group parses)


def _groups(source: str, filename: str, memo: GroupMemo | None) -> Iterable[_Group]:
    """The module's groups of top-level statements, each with the number of lines before it
    (one group for a module under GROUPED characters). Should the groups not parse one by one
    (only a pathological file does that), the whole tree comes last, with -1 lines: what came
    before it is to be dropped. A group the memo knows is not parsed here."""
    if len(source) < GROUPED or _LONE_CR.search(source):  # a line end to Python, not to counting here
        yield _Group(0, "", "", ast.parse(source, filename))
        return
    begin = line = failed = 0
    for end in [*group_starts(source), len(source)]:
        if not ends_group(source, begin, end):
            continue
        chunk = source[begin:end]
        key = group_key(chunk) if memo is not None else ""
        tree = None
        if not (key and memo is not None and memo.known(key)):
            try:
                tree = ast.parse(chunk, filename)
            except (SyntaxError, ValueError):
                failed += 1
                if end == len(source) or failed > MAX_RETRIES:
                    yield _Group(-1, "", "", ast.parse(source, filename))  # or the file's SyntaxError
                    return
                continue
        yield _Group(line, chunk, key, tree)
        failed = 0
        line += chunk.count("\n")
        begin = end


def _read_group(tree: ast.Module, names: set[str]) -> list[Any]:
    """What one group adds to the summary, with line numbers relative to it: [names of @stage it
    was read with, names of @stage it imports, whether a decorator was compared with them,
    definitions ([key, digest, refs, flags], in order), statements ([digest, refs, names bound,
    imports [name, level, module, attr], star imports [level, module]]), dumps joined by _SEP]."""
    normaliser = Normaliser(names)
    kept = [normaliser.visit(stmt) for stmt in tree.body if not is_bare_string(stmt)]
    analyser = _Analyser(normaliser.first_lines)
    statements: list[list[Any]] = []
    texts: list[str] = []
    for stmt in kept:
        analyser.stmt = _Acc()
        analyser.visit(stmt)
        text = analyser.last[1] if analyser.last[0] is stmt else ast.dump(stmt)
        texts.append(text)
        imports: list[list[Any]] = []
        stars: list[list[Any]] = []
        for imp in _stmt_imports(stmt):
            if isinstance(imp, ast.Import):
                for a in imp.names:
                    top = a.name.split(".")[0]
                    imports.append([a.asname, 0, a.name, ""] if a.asname else [top, 0, top, ""])
            else:
                for a in imp.names:
                    if a.name == "*":
                        stars.append([imp.level, imp.module or ""])
                    else:
                        imports.append([a.asname or a.name, imp.level, imp.module or "", a.name])
        bound = list(bindings("module", [stmt], imports=False).bound)
        statements.append([entry_digest(text), sorted(analyser.stmt.refs), bound, imports, stars])
    return [sorted(names), sorted(stage_imports(tree.body)), bool(normaliser.decorators), analyser.records,
            statements, _SEP.join(texts)]


class _Summary:
    """The summary, built group by group. `names`: the names of @stage, when known."""

    def __init__(self, names: set[str] | None) -> None:
        self.names = names
        self.found: set[str] = set()  # names of @stage imported so far
        self.used: set[frozenset[str]] = set()  # names decorators were compared with
        self.defs: dict[str, list[Any]] = {}
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

    def add(self, group: _Group, filename: str, memo: GroupMemo | None) -> None:
        entry = memo.find(group.key) if memo is not None and group.key else None
        if entry is not None:
            if self.names is None:
                self.found |= set(entry[1])
            if entry[0] != sorted(self.final_names()):
                entry = None  # read with other names of @stage
        if entry is None:
            tree = group.tree or ast.parse(group.chunk, filename)
            if self.names is None:
                self.found |= stage_imports(tree.body)
            entry = _read_group(tree, self.final_names())
            if memo is not None:
                memo.read += 1
                memo.fresh.add(group.key)
        if memo is not None and group.key:
            memo.new[group.key] = entry
        self._apply(group.line, entry)

    def _apply(self, line: int, entry: list[Any]) -> None:
        names, _found, decorators, records, statements, text = entry
        if decorators:
            self.used.add(frozenset(names))
        for key, digest, refs, flags in records:
            if key.startswith("f:"):
                key = f"f:{int(key[2:]) + line}"
            old = self.defs.get(key)
            if old is not None:  # two definitions found under one key (lambdas on one line): count both
                digest = entry_digest(old[0] + digest)
                refs, flags = sorted(set(refs) | set(old[1])), sorted(set(flags) | set(old[2]))
            self.defs[key] = [digest, refs, flags]
        if statements:
            self.file.update(_SEP + text if self.stmts else text)
        for digest, refs, bound, imports, stars in statements:
            index = len(self.stmts)
            self.stmts.append([digest, refs])
            for name in bound:
                self.binds.setdefault(name, []).append(index)
            for name, level, module, attr in imports:
                self.imports[name] = [level, module, attr]
            self.stars.extend(stars)

    def result(self) -> dict[str, Any]:
        if not self.stmts:  # nothing but strings: the module reads as `pass`
            self._apply(0, _read_group(ast.Module(body=[ast.Pass()], type_ignores=[]), self.final_names()))
        self.file.update(_TAIL)
        return {"defs": self.defs, "stmts": self.stmts, "binds": self.binds, "imports": self.imports,
                "stars": self.stars, "file": self.file.hexdigest()}
