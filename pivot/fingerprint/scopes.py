"""Python's scoping rules on the AST: which names a scope binds, and the small syntax helpers
(dotted chains, module-level statements, source positions) the static analysis is built on."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field

COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
# Nodes with a scope of their own: only some of their parts are evaluated in the enclosing one.
_OWN_SCOPE = (*_DEFINITIONS, ast.Lambda, *COMPREHENSIONS)


def dotted(node: ast.expr) -> str | None:
    """`a.b.c` for a chain of attributes on a name; None for anything else."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def chain_head(node: ast.expr) -> ast.Name:
    """The name a dotted chain starts from (`a` of `a.b.c`)."""
    while isinstance(node, ast.Attribute):
        node = node.value
    assert isinstance(node, ast.Name)
    return node


def position(node: ast.AST) -> tuple[int, int]:
    return getattr(node, "lineno", 0), getattr(node, "col_offset", 0)


def module_level(body: list[ast.stmt]) -> Iterable[ast.stmt]:
    """Statements executed at module level, including inside if/try/with/for blocks."""
    stack = list(reversed(body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, _DEFINITIONS):
            continue
        for name in ("body", "orelse", "finalbody"):
            stack.extend(reversed(getattr(node, name, None) or []))
        for handler in getattr(node, "handlers", None) or []:
            stack.extend(reversed(handler.body))
        for case in getattr(node, "cases", None) or []:
            stack.extend(reversed(case.body))


@dataclass
class Scope:
    kind: str  # module | function | class
    bound: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> first binding position
    glob: set[str] = field(default_factory=set)
    nonloc: set[str] = field(default_factory=set)

    def bind(self, name: str, node: ast.AST) -> None:
        pos = position(node)
        if name not in self.bound or pos < self.bound[name]:
            self.bound[name] = pos


def defaults(args: ast.arguments) -> list[ast.expr]:
    """Default values of a signature (evaluated where the function is defined)."""
    return [*args.defaults, *(d for d in args.kw_defaults if d is not None)]


def arg_names(args: ast.arguments) -> list[str]:
    return [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg)
            if a is not None]


def bindings(kind: str, nodes: Iterable[ast.AST], params: Iterable[str] = (),
             imports: bool = True) -> Scope:
    """The names a scope binds (Python's rule: bound anywhere in the scope means local)."""
    scope = Scope(kind, {p: (0, 0) for p in params})
    stack = list(nodes)
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Name):
            if not isinstance(n.ctx, ast.Load):
                scope.bind(n.id, n)
        elif isinstance(n, _OWN_SCOPE):
            stack.extend(_evaluated_here(n, scope))
            continue
        else:
            _bind_statement(n, scope, imports)
        stack.extend(ast.iter_child_nodes(n))
    return scope


def _evaluated_here(n: ast.AST, scope: Scope) -> list[ast.AST]:
    """A def, class, lambda or comprehension: binds what it binds in `scope`; returns the parts
    of it evaluated in `scope` (decorators, bases, defaults, a comprehension's first iterable)."""
    if isinstance(n, _DEFINITIONS):
        scope.bind(n.name, n)
        parts: list[ast.AST] = list(n.decorator_list)
        if isinstance(n, ast.ClassDef):
            parts.extend([*n.bases, *(k.value for k in n.keywords)])
        else:
            parts.extend(defaults(n.args))
        return parts
    if isinstance(n, ast.Lambda):
        return list(defaults(n.args))
    assert isinstance(n, COMPREHENSIONS)
    for sub in ast.walk(n):  # `:=` in a comprehension binds in the enclosing scope
        if isinstance(sub, ast.NamedExpr) and isinstance(sub.target, ast.Name):
            scope.bind(sub.target.id, sub)
    return [n.generators[0].iter]


def _bind_statement(n: ast.AST, scope: Scope, imports: bool) -> None:
    """The names a node other than a name or a nested scope binds (or declares global/nonlocal)."""
    if isinstance(n, ast.Global):
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
