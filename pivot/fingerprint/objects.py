"""Inspecting live objects: how a function or class is named, what a closure holds, a
function's bytecode when its source is missing, and which objects are plain data or wrappers."""

from __future__ import annotations

import functools
import types
from collections.abc import Iterable
from typing import Any


def identity(obj: Any) -> tuple[str, str]:
    """(module, qualname) of a function or class. A function is named by its code, not by
    __module__/__qualname__, which functools.wraps copies onto wrappers."""
    if isinstance(obj, types.FunctionType):
        return obj.__globals__.get("__name__") or obj.__module__ or "", obj.__code__.co_qualname
    return getattr(obj, "__module__", None) or "", getattr(obj, "__qualname__", "<?>")


def importable(obj: Any) -> bool:
    """True when module.qualname names the object (so it is its key, however it was reached)."""
    return "<" not in identity(obj)[1]


def cells(func: types.FunctionType) -> dict[str, Any]:
    """A function's closure variables that are assigned, by name."""
    out: dict[str, Any] = {}
    # a function has exactly one cell per free variable; strict=False as zip() always was here
    for name, cell in zip(func.__code__.co_freevars, func.__closure__ or (), strict=False):
        try:
            out[name] = cell.cell_contents
        except ValueError:  # an empty cell: the variable is not assigned yet
            continue
    return out


def code_text(code: types.CodeType) -> str:
    """A code object as text: what is hashed when a function's source cannot be found."""
    consts = [(code_text(c) if isinstance(c, types.CodeType) else repr(c)) for c in code.co_consts]
    return f"{code.co_code.hex()}|{consts}|{code.co_names}|{code.co_varnames}"


def all_names(code: types.CodeType) -> set[str]:
    """The global and attribute names a code object and the code nested in it use."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= all_names(const)
    return names


def shallow_code(values: Iterable[Any]) -> Iterable[Any]:
    """Functions and classes among `values` and inside containers among them (one level)."""
    for value in values:
        if isinstance(value, (types.FunctionType, type)):
            yield value
        elif isinstance(value, (dict, types.MappingProxyType)):
            yield from (v for v in (*value.keys(), *value.values()) if isinstance(v, (types.FunctionType, type)))
        elif isinstance(value, (list, tuple, set, frozenset)):
            yield from (v for v in value if isinstance(v, (types.FunctionType, type)))


def is_plain(value: Any, depth: int = 0) -> bool:
    """Plain data (what a class attribute usually is): hashed with the class."""
    if value is None or type(value) in (bool, int, float, complex, str, bytes, range):
        return True
    if depth < 5 and type(value) in (tuple, list, set, frozenset):
        return all(is_plain(v, depth + 1) for v in value)
    if depth < 5 and type(value) is dict:
        return all(is_plain(k, depth + 1) and is_plain(v, depth + 1) for k, v in value.items())
    return False


def member_code(value: Any) -> list[Any]:
    """The code a class attribute holds: a function, the function of a staticmethod or
    classmethod, the accessors of a property (pydantic's computed fields are properties), the
    function of a functools.cached_property, or a wrapper of code (functools.lru_cache...)."""
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, types.FunctionType):
        return [value]
    if isinstance(value, property):
        return [f for f in (value.fget, value.fset, value.fdel) if f is not None]
    if isinstance(value, functools.cached_property):
        return [value.func]
    return [value] if wraps_code(value) else []


def wraps_code(obj: Any) -> bool:
    """A callable object wrapping a function or class (functools.lru_cache and the like)."""
    if isinstance(obj, (functools.partial, types.MethodType)):
        return False
    try:
        return callable(obj) and isinstance(getattr(obj, "__wrapped__", None), (types.FunctionType, type))
    except Exception:  # a proxy whose attribute access fails: treat it as a value
        return False


def split_label(label: str) -> tuple[str, str]:
    """("pkg.mod", "name") from "pkg.mod.name"."""
    module, _, name = label.rpartition(".")
    return module, name
