"""`pivot metrics show --all-stages`: one row per stage, to compare a sweep's variants.

A row is a stage that declares Metric outputs: its name, its sweep values (one column per matrix
key) and its metric values (one column per flattened key, across all its metric files). A key
that two metric files of one stage both hold is shown as `<file>:<key>` for the second file.
Rows come in pipeline order (at a revision: by name) unless sorted by a column: numbers by
value, then other values by their text, then missing values, last whatever the direction.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pivot import metrics
from pivot.errors import GraphError, MetricsError
from pivot.outputs import Metric

_KEY = re.compile(r"(?:^|,)([A-Za-z_][A-Za-z0-9_]*)=")


@dataclass(frozen=True)
class Row:
    stage: str
    matrix: dict[str, Any]  # a sweep variant's values (empty for another stage)
    values: dict[str, Any] = field(default_factory=dict)  # metric key -> value


@dataclass(frozen=True)
class Table:
    rev: str  # "workspace" or as the user wrote it
    commit: str | None
    keys: list[str]  # the matrix keys, in declared order
    columns: list[str]  # the metric keys, sorted
    rows: list[Row]
    notes: tuple[str, ...] = ()

    @property
    def header(self) -> list[str]:
        return ["stage", *self.keys, *self.columns]

    def cell(self, row: Row, column: str) -> Any:
        if column == "stage":
            return row.stage
        if column in self.keys and column not in self.columns:
            return row.matrix.get(column, metrics.ABSENT)
        return row.values.get(column, metrics.ABSENT)


def stage_table(root: Path, rev: str | None, stages: Sequence[str] = ()) -> Table:
    """The metrics of every stage (of `stages` only, a sweep's name standing for its variants),
    in the workspace (rev None) or at git revision `rev`."""
    if rev is None:
        return _workspace(root, stages)
    from pivot.history import History  # lazy: pygit2 only for a revision

    with History(root) as history:
        commit = metrics.resolve(history, rev)
        locks = history.locks_at(commit)
        where = f"at {rev} ({commit[:10]})"
        wanted = _wanted(sorted(locks), stages, lambda n: n.partition("@")[0] if "@" in n else None)
        found = []
        for name in wanted:
            lock = locks[name]
            files = [r.path for r in lock.outs if r.kind == Metric.kind]
            if files:
                found.append((name, variant_of(name, lock.params or {}), files))
        return _table(rev, commit, found, lambda p: history.read_blob(commit, p), where,
                      lambda s, p: f"{p} (stage {s}) is in the lock files {where} but was not committed")


def _workspace(root: Path, stages: Sequence[str]) -> Table:
    from pivot.config import load_config  # lazy: the pipeline only for the workspace
    from pivot.graph import normalize_path
    from pivot.sweep import load_stages

    os.chdir(root)  # stages (and code run at import) see the project root as their working folder
    declared = {s.name: s for s in load_stages(root, load_config(root).pipeline)}
    wanted = _wanted(list(declared), stages, lambda n: declared[n].sweep)
    found = []
    for name in wanted:
        s = declared[name]
        files = [normalize_path(o.path, name, "output") for o in s.outs if isinstance(o, Metric)]
        if files:
            found.append((name, dict(s.variant), files))
    return _table(metrics.WORKSPACE, None, found, lambda p: metrics.read_workspace(root, p), "in the workspace",
                  lambda s, p: f"{p} (stage {s}) is not in the workspace; run 'pivot run {s}'")


def _wanted(names: list[str], stages: Sequence[str], sweep_of: Callable[[str], str | None]) -> list[str]:
    if not stages:
        return names
    for t in stages:
        if t not in names and not any(sweep_of(n) == t for n in names):
            raise GraphError(f"unknown stage '{t}'; run 'pivot list' to see the stages")
    return [n for n in names if n in stages or sweep_of(n) in stages]


def variant_of(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """A sweep variant's matrix values, from its name and the params its lock records (typed);
    empty for a stage that is not a variant, or whose name and params do not agree."""
    from pivot.sweep import variant_name

    base, at, rest = name.partition("@")
    if not at:
        return {}
    keys = _KEY.findall(rest)
    if keys and all(k in params for k in keys):
        combo = tuple((k, params[k]) for k in keys)
        if variant_name(base, combo) == name:
            return dict(combo)
    return {}


def _table(rev: str, commit: str | None, found: list[tuple[str, dict[str, Any], list[str]]],
           read: Callable[[str], bytes | None], where: str, missing: Callable[[str, str], str]) -> Table:
    rows: list[Row] = []
    notes: list[str] = []
    keys: dict[str, None] = {}
    for name, matrix, files in found:
        keys.update(dict.fromkeys(matrix))
        values: dict[str, Any] = {}
        for path in files:
            data = read(path)
            if data is None:
                notes.append(missing(name, path))
                continue
            for key, value in metrics.parse_metric(data, path, f"(stage {name}) {where}").items():
                values[key if key not in values else f"{path}:{key}"] = value
        rows.append(Row(name, matrix, {f"{k} (metric)" if k in matrix else k: v for k, v in values.items()}))
    columns = sorted({k for r in rows for k in r.values})
    return Table(rev, commit, list(keys), columns, rows, tuple(notes))


def sorted_by(table: Table, column: str, descending: bool = False) -> Table:
    """The table with its rows ordered by `column`; missing values last either way."""
    if column not in table.header:
        raise MetricsError(f"cannot sort by '{column}': no such column; columns: {', '.join(table.header)}")
    numbers, texts, absent = [], [], []
    for row in table.rows:
        value = table.cell(row, column)
        if value is metrics.ABSENT or value is None:
            absent.append(row)
        elif metrics.is_number(value) and value == value:  # NaN sorts with the texts
            numbers.append((value, row))
        else:
            texts.append((metrics.format_value(value), row))
    numbers.sort(key=lambda p: p[0], reverse=descending)
    texts.sort(key=lambda p: p[0], reverse=descending)
    ordered = [r for _v, r in numbers] + [r for _t, r in texts] + absent
    return Table(table.rev, table.commit, table.keys, table.columns, ordered, table.notes)


def rendered(table: Table, markdown: bool) -> str:
    rows = [[metrics.format_value(table.cell(r, c)) for c in table.header] for r in table.rows]
    return metrics.render(table.header, rows, markdown=markdown)


def as_json(table: Table) -> dict[str, Any]:
    return {
        "rev": table.rev,
        "commit": table.commit,
        "keys": table.keys,
        "columns": table.columns,
        "rows": [{"stage": r.stage, "matrix": r.matrix, "values": r.values} for r in table.rows],
        "notes": list(table.notes),
    }
