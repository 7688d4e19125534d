"""Normalising a module's AST: dropping what never changes behaviour, so that only real code
changes reach the digests (docstrings, the @stage decorator, function annotations, quote kinds)."""

from __future__ import annotations

import ast

from pivot.fingerprint.scopes import dotted, module_level


def stage_decorator_names(tree: ast.Module) -> set[str]:
    """Names under which this module refers to pivot's @stage: its deps/outs never count as code."""
    # a module that gets `stage` some other way (a re-export): assume the plain name is pivot's
    return stage_imports(tree.body) or {"stage"}


def stage_imports(body: list[ast.stmt]) -> set[str]:
    """The names under which these module-level statements import pivot's @stage."""
    names: set[str] = set()
    for node in module_level(body):
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
    return names


def _first_line(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    # code.co_firstlineno of a decorated function is the line of its first decorator
    return min([node.lineno, *(d.lineno for d in node.decorator_list)])


def is_bare_string(stmt: ast.stmt) -> bool:
    """A docstring or other bare string statement: it never changes behaviour."""
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _clean_body(body: list[ast.stmt]) -> list[ast.stmt]:
    """Without docstrings or other bare string statements."""
    return [s for s in body if not is_bare_string(s)] or [ast.Pass()]


class Normaliser(ast.NodeTransformer):
    """Drops what never changes behaviour: docstrings, the @stage decorator (its deps/outs are
    compared separately), function annotations (never evaluated at call time).

    `first_lines` keeps each function's first line as its code object has it (the line of its
    first decorator), taken before the @stage decorator is dropped. `decorators` says whether a
    decorator was looked at (the only use of `stage_names`)."""

    def __init__(self, stage_names: set[str]) -> None:
        self.stage_names = stage_names
        self.in_function = 0
        self.first_lines: dict[ast.AST, int] = {}
        self.decorators = False

    def _is_stage(self, node: ast.expr) -> bool:
        self.decorators = True
        return dotted(node.func if isinstance(node, ast.Call) else node) in self.stage_names

    def visit_Module(self, node: ast.Module) -> ast.AST:
        node.body = _clean_body(node.body)
        self.generic_visit(node)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        self.first_lines[node] = _first_line(node)  # before decorators go
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
