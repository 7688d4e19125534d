"""The one YAML reader: safe loading, and every error names the file and, where the parser
knows it, the line.

Hostile input is refused with a PivotError, never a traceback: text that is not UTF-8, control
characters, nesting too deep for the parser, numbers Python will not convert, tags that would
construct objects (the safe loader knows none), duplicate keys, files larger than MAX_BYTES, and
alias "bombs" (a few hundred bytes whose aliases expand to billions of values): the parsed
value is walked with a budget of MAX_VALUES, counting every path through a shared alias.

PyYAML (its C loader when present) is imported only when a file is read, so importing this
module costs nothing at start-up.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from pivot import atomic
from pivot.errors import PivotError, YamlDuplicateKey, YamlError
from pivot.errors import YamlProblem as Problem

MAX_BYTES = 64 * 1024 * 1024  # no file Pivot reads as YAML is anywhere near this
MAX_VALUES = 1_000_000  # values in a parsed document, aliases expanded


@functools.cache
def _loader() -> Any:
    import yaml  # lazy: PyYAML costs start-up time that `pivot --help` does not need

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[valid-type,misc]  # PyYAML's loaders are untyped classes
        """The safe loader, refusing a key that appears twice in one mapping."""

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[object] = set()
            for key_node, _value in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if duplicate:
                    raise YamlDuplicateKey(key, key_node.start_mark.line + 1)
            return super().construct_mapping(node, deep)

    return Loader


def parse(text: str | bytes) -> Any:
    """Parse YAML text; any failure is a Problem (one line, no traceback)."""
    import yaml  # lazy: see _loader

    if len(text) > MAX_BYTES:
        raise Problem(f"{len(text)} bytes is too large for a file Pivot reads as YAML "
                      f"(at most {MAX_BYTES // (1024 * 1024)} MiB)", fix="keep data out of it")
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        value = yaml.load(text, Loader=_loader())
    except UnicodeDecodeError as exc:
        raise Problem(f"not UTF-8 text (byte {exc.start})", fix="save the file as UTF-8") from None
    except YamlDuplicateKey as exc:
        raise Problem(str(exc), exc.line, fix="keep one of them") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise Problem(f"invalid YAML ({problem})", mark.line + 1 if mark is not None else None) from None
    except RecursionError:
        raise Problem("nested too deeply to read", fix="flatten the file") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of thousands of digits
        raise Problem("a number too long to read" if "digits" in str(exc) else str(exc).splitlines()[0]) from None
    if not within_budget(value, MAX_VALUES):
        raise Problem(f"expands to more than {MAX_VALUES:,} values (YAML aliases?)",
                      fix="write the values out instead of aliasing them")
    return value


def loads(text: str | bytes, where: str | Path, error: type[PivotError] = YamlError) -> Any:
    """Parse YAML text read from `where` (a path, or `<sha>:<path>` for a git blob).

    Raises `error` (a PivotError subclass) naming the file, the line and the fix."""
    try:
        return parse(text)
    except Problem as exc:
        line = f":{exc.line}" if exc.line is not None else ""
        raise error(f"{where}{line}: {exc.problem}; {exc.fix}") from None


def within_budget(value: Any, budget: int) -> bool:
    """Whether `value` holds at most `budget` values, counting each path through a shared
    (aliased) container anew: the size the document has once written out."""
    stack = [value]
    while stack:
        budget -= 1
        if budget < 0:
            return False
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set):
            stack.extend(item)
    return True


def read_limited(path: Path, error: type[PivotError] = YamlError, where: str | Path | None = None) -> bytes | None:
    """A small text file's bytes, None when absent; refused (without reading it) when over MAX_BYTES."""
    where = path if where is None else where
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_BYTES:
                raise error(f"{where}: {size} bytes is too large for a file Pivot reads as YAML "
                            f"(at most {MAX_BYTES // (1024 * 1024)} MiB); keep data out of it")
            return f.read()
    except FileNotFoundError:
        return None
    except (IsADirectoryError, PermissionError) as exc:
        raise error(f"{where}: cannot be read ({exc.strerror})") from None


def load_mapping(path: Path, error: type[PivotError] = YamlError, *, where: str | Path | None = None,
                 missing_ok: bool = True) -> dict[str, Any]:
    """The top-level mapping of a YAML file; {} for an empty (or, with missing_ok, absent) file.
    `where` names the file in errors (default: the path)."""
    where = path if where is None else where
    return mapping_of(read_limited(path, error, where), where, error, missing_ok=missing_ok)


def mapping_of(data: bytes | None, where: str | Path, error: type[PivotError] = YamlError, *,
               missing_ok: bool = True) -> dict[str, Any]:
    """The top-level mapping of a YAML file's bytes (None: the file is absent), as `load_mapping`."""
    if data is None:
        if missing_ok:
            return {}
        raise error(f"{where}: no such file")
    value = loads(data, where, error)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise error(f"{where}: expected a mapping (key: value lines) at the top level")
    return value


def dumps(value: Any) -> str:
    """Deterministic YAML: sorted keys, block style, no line wrapping."""
    import yaml  # lazy: see _loader

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text: str = yaml.dump(value, Dumper=dumper, sort_keys=True, default_flow_style=False,
                          allow_unicode=True, width=1000)
    return text


_MEMO_SCHEMA = 1


def remembered(memo: Path, data: list[bytes | None], parse: Callable[[], list[Any]],
               shape: Callable[[list[Any]], bool] = lambda _parsed: True) -> list[Any]:
    """`parse()` of files whose bytes are `data` (None: absent), remembered in the JSON file
    `memo` by those exact bytes, so that unchanged files are read without importing PyYAML
    (10 ms idle, up to ~100 ms on a loaded machine: a good part of a no-op `pivot status`).
    Only values JSON gives back exactly (str keys; str, int, finite float, bool, None, list,
    dict) are remembered; anything else is parsed every time. `shape`: what a remembered
    list must satisfy to be used (a damaged memo is a forgotten one)."""
    key = [None if d is None else d.decode("latin-1") for d in data]  # latin-1: any bytes, exactly
    found = _recall(memo, key)
    if found is not None and shape(found):
        return found
    parsed = parse()
    if all(_json_exact(value) for value in parsed) and memo.parents[2].is_dir():  # .pivot/tmp/pycache/: in .pivot/
        with suppress(OSError):  # a read-only project is read, not remembered
            memo.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(memo, json.dumps({"schema": _MEMO_SCHEMA, "files": key, "parsed": parsed}).encode())
    return parsed


def _recall(memo: Path, key: list[str | None]) -> list[Any] | None:
    try:
        with open(memo, "rb") as f:
            found = json.loads(f.read())
    except (OSError, ValueError):  # absent or damaged: parse the files
        return None
    if not isinstance(found, dict) or found.get("schema") != _MEMO_SCHEMA or found.get("files") != key:
        return None
    parsed = found.get("parsed")
    return parsed if isinstance(parsed, list) and len(parsed) == len(key) else None


def _json_exact(value: Any) -> bool:
    """Whether JSON gives `value` back with the same types and value."""
    if value is None or isinstance(value, str | bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_json_exact(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_exact(v) for k, v in value.items())
    return False
