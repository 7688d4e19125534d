"""Parameter sweeps: a stage declared once with `@stage(matrix=...)` becomes one stage per
combination of the matrix's values.

A variant is named `<stage>@<key>=<value>,<key>=<value>` with the keys in declared order
(`train@model=tree,seed=1`); a string value is written as it is, any other as compact JSON
(`1`, `0.5`, `true`, `null`, `[64,32]`). Its dep and output paths are the declared ones with
`{key}` replaced by the same text, and its `variant` holds the values, which `params.resolve`
lays over the stage's params. Everything is checked here, before anything runs: the grid, the
values, the keys (fields of the params model), the templates and that every variant has outputs
of its own.
"""

from __future__ import annotations

import itertools
import json
import math
import posixpath
import string
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pivot.errors import PipelineError
from pivot.layout import LOCK_SUFFIX, stage_file
from pivot.stage import Stage, discover

MAX_FILE_NAME = 240  # bytes of a variant's lock file name (file systems allow 255)


def load_stages(root: Path, pipeline: str) -> list[Stage]:
    """The pipeline's stages in definition order, each sweep replaced by its variants."""
    return expand_all(discover(root, pipeline))


def expand_all(stages: list[Stage]) -> list[Stage]:
    found: list[Stage] = []
    for s in stages:
        found.extend(variants(s) if s.matrix is not None else [s])
    return found


def expand(template: str, matrix: Mapping[str, Sequence[Any]]) -> list[str]:
    """Every path `template` names over `matrix`, in the order of the variants, e.g.
    `deps=expand("metrics/{model}-{seed}.json", GRID)` for a stage that compares a sweep."""
    grid = check_grid(matrix, "pivot.expand")
    return [fill(template, combo, "pivot.expand", "path") for combo in combinations(grid)]


def variants(s: Stage) -> list[Stage]:
    """The stages of sweep `s`, in grid order (the last key varies fastest)."""
    where = f"stage '{s.name}' ({s.where})"
    grid = check_grid(s.matrix, where)
    _check_fields(s, [k for k, _v in grid], where)
    found = []
    for combo in combinations(grid):
        name = variant_name(s.name, combo)
        if len(stage_file(name, LOCK_SUFFIX).encode()) > MAX_FILE_NAME:
            raise PipelineError(f"{where}: the variant name '{name[:80]}…' is too long for a lock file; "
                                "use shorter matrix values")
        deps = tuple(fill(d, combo, where, "dep") for d in s.deps)
        outs = tuple(replace(o, path=fill(o.path, combo, where, "output")) for o in s.outs)
        found.append(replace(s, name=name, deps=deps, outs=outs, matrix=None, variant=combo))
    _check_distinct(s, found, where)
    return found


def combinations(grid: list[tuple[str, list[Any]]]) -> list[tuple[tuple[str, Any], ...]]:
    keys = [k for k, _v in grid]
    return [tuple(zip(keys, values, strict=True)) for values in itertools.product(*(v for _k, v in grid))]


def render(value: Any) -> str:
    """A matrix value as a stage name and a path show it."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def variant_name(base: str, combo: tuple[tuple[str, Any], ...]) -> str:
    return f"{base}@" + ",".join(f"{k}={render(v)}" for k, v in combo)


def check_grid(matrix: Any, where: str) -> list[tuple[str, list[Any]]]:
    """The matrix as [(key, values)] in declared order, or a PipelineError saying what is wrong."""
    if not isinstance(matrix, Mapping):
        raise PipelineError(f"{where}: matrix= must be a dict of params field -> list of values, "
                            f"got {type(matrix).__name__}")
    if not matrix:
        raise PipelineError(f"{where}: matrix= is empty, so the sweep has no variants; "
                            "give at least one params field and its values")
    grid = []
    for key, values in matrix.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise PipelineError(f"{where}: matrix key {key!r} is not a params field name")
        if not isinstance(values, (list, tuple)):
            raise PipelineError(f"{where}: matrix key '{key}' must map to a list of values, "
                                f"got {type(values).__name__}")
        if not values:
            raise PipelineError(f"{where}: matrix key '{key}' has an empty list of values, so the sweep "
                                "has no variants; give it at least one value")
        seen: dict[str, Any] = {}
        for value in values:
            problem = _not_plain(value)
            if problem is not None:
                raise PipelineError(f"{where}: matrix key '{key}': {problem} is not a YAML/JSON value; "
                                    "use strings, numbers, booleans, null, or lists and mappings of them")
            text = render(value)
            if text in seen:
                both = "appears twice" if seen[text] == value and type(seen[text]) is type(value) \
                    else f"and {seen[text]!r} are both written '{text}' in a stage name"
                raise PipelineError(f"{where}: matrix key '{key}': value {value!r} {both}; "
                                    "give each value once")
            seen[text] = value
        grid.append((key, list(values)))
    return grid


def _not_plain(value: Any) -> str | None:
    """What in `value` YAML and JSON cannot hold as plain data (None when all of it can)."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return f"{value!r} (not UTF-8 text)"
        return None
    if value is None or isinstance(value, (bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r}"
    if isinstance(value, (list, tuple)):
        return next((p for p in map(_not_plain, value) if p is not None), None)
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"the mapping key {k!r}"
            problem = _not_plain(v)
            if problem is not None:
                return problem
        return None
    text = repr(value)
    return f"{text[:60]}{'…' if len(text) > 60 else ''} (a {type(value).__name__})"


def _check_fields(s: Stage, keys: list[str], where: str) -> None:
    if s.params is None:
        raise PipelineError(f"{where}: matrix= sets params fields, but the stage has no params= model; "
                            "add params= with a field for each matrix key")
    fields = s.params.model_fields  # type: ignore[attr-defined]  # a pydantic model (checked by discover)
    for key in keys:
        if key not in fields:
            raise PipelineError(f"{where}: matrix key '{key}' is not a field of {s.params.__name__} "
                                f"(fields: {', '.join(fields) or 'none'}); add it to the model or fix the key")


def fill(template: str, combo: tuple[tuple[str, Any], ...], where: str, role: str) -> str:
    """`template` with each `{key}` replaced by the variant's value (`{{` and `}}` are braces)."""
    values = dict(combo)
    keys = ", ".join("{" + k + "}" for k in values)
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise PipelineError(f"{where}: {role} template '{template}': {exc}; write literal braces as {{{{ and }}}}") \
            from None
    text = []
    for literal, field, spec, conversion in parts:
        text.append(literal)
        if field is None:
            continue
        if field not in values or spec or conversion:
            written = field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise PipelineError(f"{where}: {role} template '{template}': '{{{written}}}' is not a matrix key; "
                                f"use one of {keys}")
        text.append(render(values[field]))
    return "".join(text)


def _check_distinct(s: Stage, found: list[Stage], where: str) -> None:
    """No two variants may declare the same output: each needs outputs of its own."""
    owner: dict[str, str] = {}
    for v in found:
        for declared, out in zip(s.outs, v.outs, strict=True):
            path = posixpath.normpath(out.path)
            other = owner.get(path)
            if other is not None and other != v.name:
                used = {f for _l, f, _s, _c in string.Formatter().parse(declared.path) if f}
                lacks = ", ".join("{" + k + "}" for k, _v in v.variant if k not in used)
                hint = f"it lacks {lacks}" if lacks else "make each variant's path distinct"
                raise PipelineError(f"{where}: output '{declared.path}' is '{out.path}' for both '{other}' and "
                                    f"'{v.name}'; put every matrix key in each output path ({hint})")
            owner[path] = v.name
