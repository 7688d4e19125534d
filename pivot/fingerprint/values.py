"""Hashing module-level values canonically: plain data directly, other objects through their
pickle reduction; sets sorted (their order varies between processes), project paths made
portable, and code inside a value referenced by name (its code is counted separately, as an
item the value reaches)."""

from __future__ import annotations

import copyreg
import enum
import functools
import types
from pathlib import PurePath
from typing import Any, Protocol

import xxhash

from pivot.errors import Unhashable
from pivot.fingerprint.items import Item, Node
from pivot.fingerprint.manifest import DIGEST_CHARS, exception_note
from pivot.fingerprint.objects import cells, identity, importable

_MAX_VALUE_STEPS = 2_000_000  # objects visited while hashing one value
_MAX_VALUE_DEPTH = 200


class CodeWalk(Protocol):
    """What hashing a value needs from the walk over a stage's code (the Fingerprinter)."""

    @property
    def portable_forms(self) -> list[tuple[str, str]]:
        """(text, placeholder) pairs, longest text first: the project root and the home directory."""

    def classify(self, obj: Any, label: str, kind: str, module: str, name: str, owner: str) -> Item: ...

    def owns(self, obj: Any) -> bool: ...

    def node(self, item: Item) -> Node: ...


class ValueHasher:
    """A canonical hash of one value (`label`: its name in the manifest); `children` collects the
    code and classes the value reaches."""

    def __init__(self, walk: CodeWalk, label: str) -> None:
        self.walk = walk
        self.label = label
        self.children: list[Item] = []
        self.active: set[int] = set()
        self.steps = 0

    def _portable(self, text: str) -> str:
        """The project root inside a string as `<root>` (a clone elsewhere has the same value),
        the home directory as `<home>`."""
        for form, placeholder in self.walk.portable_forms:
            if form in text:
                text = text.replace(form, placeholder)
        return text

    def digest(self, value: Any) -> str:
        h = xxhash.xxh3_128()
        self.feed(h, value, 0)
        return h.hexdigest()[:DIGEST_CHARS]

    def feed(self, h: Any, v: Any, depth: int) -> None:
        self.steps += 1
        if depth > _MAX_VALUE_DEPTH or self.steps > _MAX_VALUE_STEPS:
            raise Unhashable("too deeply nested or too large")
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
            raise Unhashable(exception_note(exc)) from None
        if isinstance(rv, str):
            h.update(f"global:{t.__module__}.{rv};".encode())
            return
        if not isinstance(rv, tuple) or len(rv) < 2:
            raise Unhashable("unusual pickle reduction")
        func, args, state, items, pairs = (*rv, None, None, None)[:5]
        h.update(b"reduce(")
        self.feed(h, func, depth + 1)
        self.feed(h, args, depth + 1)
        self.feed(h, state, depth + 1)
        self.feed(h, list(items) if items is not None else None, depth + 1)
        self.feed(h, list(pairs) if pairs is not None else None, depth + 1)
        h.update(b")")

    def _child(self, obj: Any) -> None:
        self.children.append(self.walk.classify(obj, "", "const", "", "", self.label))

    def _code(self, h: Any, v: Any, depth: int) -> bool:
        """Functions, classes and modules inside a value: by name, their code counted separately."""
        if isinstance(v, types.FunctionType):
            name = ".".join(identity(v))
            if not importable(v) and self.walk.owns(v):
                # a lambda in a dict: named after the value, its code and closure hashed in place
                label = f"{self.label}.{v.__name__}"
                self.children.append(Item("obj", label, v))
                node = self.walk.node(Item("obj", label, v))
                h.update(f"fn:{name}:{next(iter(node.entries.values()), '')};".encode())
                self.feed(h, tuple(cells(v).values()), depth + 1)
                self.feed(h, (v.__defaults__, v.__kwdefaults__), depth + 1)
                return True
            self.children.append(Item("obj", "", v))
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
        if isinstance(v, types.BuiltinFunctionType) and (
                v.__self__ is None or isinstance(v.__self__, types.ModuleType)):
            self._child(v)
            h.update(f"bfn:{v.__module__}.{v.__qualname__};".encode())
            return True
        return False
