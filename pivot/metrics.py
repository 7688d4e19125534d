"""Metrics and params, in the workspace or at any git revision: read, flatten, diff, tabulate.

A value is addressed by (group, key): for metrics the group is the metric file's path, for params
the stage's name; the key is the path inside it with nested mappings flattened (`loss.train`).
Lists are values of their own (shown as JSON text), not flattened.

Where the values come from:
- metrics in the workspace: the `Metric` outputs of the current pipeline, read from disk (so a
  metric added but not committed yet shows up);
- metrics at a revision: the `metric` outputs listed in that revision's lock files, each read
  from git objects at that revision (metrics are committed; nothing is checked out);
- params: the values the lock files record (model defaults merged with params.yaml when the
  stage last ran), in .pivot/stages or at a revision.

Reading is at the edges (`metrics_snapshot`, `params_snapshot`); everything else is pure.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pivot import yamlio
from pivot.errors import GitError, MetricsError, YamlProblem
from pivot.outputs import Metric

if TYPE_CHECKING:
    from pivot.history import History
    from pivot.lock import StageLock
    from pivot.records import PathRecord
    from pivot.stage import Stage

WORKSPACE = "workspace"
Values = dict[tuple[str, str], Any]  # (group, key) -> value


class _Absent:
    """A value missing on one side of a diff (distinct from a null value)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class Snapshot:
    """The values at one place: the workspace (commit None) or a git revision."""

    rev: str  # as the user wrote it, or "workspace"
    commit: str | None
    values: Values
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.rev if self.commit is None else f"{self.rev} ({self.commit[:10]})"


# -- reading files -----------------------------------------------------------------------------


def read_at(root: Path, rev: str | None, path: str) -> bytes | None:
    """The bytes of `path` (relative to the project root) in the workspace (rev None) or at git
    revision `rev`, read from git objects; None when the file is absent there."""
    if rev is None:
        return read_workspace(root, path)
    from pivot.git import read_blob

    return read_blob(root, rev, path)


def read_workspace(root: Path, path: str) -> bytes | None:
    full = root / path
    if full.is_dir():
        raise MetricsError(f"{path} is a folder; a Metric output must be one JSON or YAML file")
    try:
        return full.read_bytes()
    except FileNotFoundError:
        return None


def parse_metric(data: bytes, path: str, where: str) -> dict[str, Any]:
    """A metric file's values, flattened. `.json` is read as JSON, anything else as YAML (which
    also reads JSON). `where` says which copy it is, for errors ("in the workspace", "at HEAD~1")."""
    def fail(problem: str) -> MetricsError:
        return MetricsError(f"{path} {where}: {problem}; a Metric must be a JSON or YAML mapping of names to values")

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise fail("not UTF-8 text") from None
    parsed = _load_json(text, fail) if path.endswith(".json") else _load_yaml(text, fail)
    if not isinstance(parsed, dict):
        raise fail(f"the top level is {_kind(parsed)}, not a mapping")
    try:
        plain = json.loads(json.dumps(parsed, default=str))  # YAML dates, int keys -> JSON types
    except (TypeError, ValueError) as exc:
        raise fail(f"unsupported value ({exc})") from None
    return flatten(plain)


def _load_json(text: str, fail: Callable[[str], MetricsError]) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None


def _load_yaml(text: str, fail: Callable[[str], MetricsError]) -> Any:
    try:
        data = yamlio.parse(text)
    except YamlProblem as exc:
        at = f" at line {exc.line}" if exc.line is not None else ""
        problem = exc.problem.removeprefix("invalid YAML (").removesuffix(")") \
            if exc.problem.startswith("invalid YAML (") else exc.problem
        raise fail(f"not valid YAML ({problem}{at})") from None
    return {} if data is None else data


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings become dotted keys: {"a": {"b": 1}} -> {"a.b": 1}. Lists and empty
    mappings stay values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


# -- snapshots: metrics --------------------------------------------------------------------------


def metrics_snapshot(root: Path, rev: str | None) -> Snapshot:
    """Every metric value in the workspace (rev None) or at git revision `rev`."""
    if rev is None:
        files = _pipeline_metrics(root)
        values, notes = _collect(files, lambda p: read_workspace(root, p), "in the workspace",
                                 lambda s, p: f"{p} (stage {s}) is not in the workspace; run 'pivot run {s}'")
        return Snapshot(WORKSPACE, None, values, notes)
    from pivot.history import History

    with History(root) as history:
        commit = resolve(history, rev)
        files = _locked_metrics(history.locks_at(commit))
        where = f"at {rev} ({commit[:10]})"
        values, notes = _collect(files, lambda p: history.read_blob(commit, p), where,
                                 lambda s, p: f"{p} (stage {s}) is in the lock files {where} but was not committed")
        return Snapshot(rev, commit, values, notes)


def _collect(files: list[tuple[str, str]], read: Callable[[str], bytes | None], where: str,
             missing: Callable[[str, str], str]) -> tuple[Values, tuple[str, ...]]:
    values: Values = {}
    notes: list[str] = []
    for stage, path in files:
        data = read(path)
        if data is None:
            notes.append(missing(stage, path))
            continue
        for key, value in parse_metric(data, path, f"(stage {stage}) {where}").items():
            values[(path, key)] = value
    return values, tuple(notes)


def _pipeline_metrics(root: Path) -> list[tuple[str, str]]:
    """(stage, path) of every Metric output the current pipeline declares."""
    from pivot.graph import normalize_path

    return [(s.name, normalize_path(o.path, s.name, "output"))
            for s in _load_stages(root) for o in s.outs if isinstance(o, Metric)]


def _locked_metrics(locks: dict[str, StageLock]) -> list[tuple[str, str]]:
    return [(stage, rec.path) for stage, lock in sorted(locks.items()) for rec in lock.outs if rec.kind == Metric.kind]


def _load_stages(root: Path) -> list[Stage]:
    from pivot.config import load_config
    from pivot.sweep import load_stages

    os.chdir(root)  # stages (and code run at import) see the project root as their working folder
    return load_stages(root, load_config(root).pipeline)


# -- snapshots: params ---------------------------------------------------------------------------


def params_snapshot(root: Path, rev: str | None) -> Snapshot:
    """The parameter values the lock files record, per stage: in .pivot/stages (rev None, with a
    note for each stage whose current params no longer match its lock) or at git revision `rev`."""
    if rev is None:
        locks = _workspace_locks(root)
        return Snapshot(WORKSPACE, None, params_values(locks), tuple(_stale_params(root, locks)))
    from pivot.history import History

    with History(root) as history:
        commit = resolve(history, rev)
        return Snapshot(rev, commit, params_values(history.locks_at(commit)))


def params_values(locks: dict[str, StageLock]) -> Values:
    return {(stage, key): value for stage, lock in locks.items()
            for key, value in flatten(lock.params or {}).items()}


def _workspace_locks(root: Path) -> dict[str, StageLock]:
    from pivot import lock as lockfile
    from pivot.layout import STAGES_DIR

    stages_dir = root / STAGES_DIR
    found = {name: lockfile.read(stages_dir, name) for name in lockfile.locked_stages(stages_dir)}
    return {name: lock for name, lock in found.items() if lock is not None}


def _stale_params(root: Path, locks: dict[str, StageLock]) -> Iterator[str]:
    """A note for each stage whose params (model defaults merged with params.yaml) are not what
    its lock records: the values shown for it are out of date until it runs again."""
    from pivot import params as params_mod

    overrides = params_mod.load_overrides(root)
    for s in _load_stages(root):
        if s.params is None:
            continue
        current = flatten(params_mod.as_record(params_mod.resolve(s, overrides)))
        lock = locks.get(s.name)
        if lock is None:
            yield f"stage {s.name} has not run, so no params are recorded for it; run 'pivot run {s.name}'"
            continue
        changed = diff(params_values({s.name: lock}), {(s.name, k): v for k, v in current.items()})
        if changed:
            what = ", ".join(f"{c.key}: {format_value(c.old)} -> {format_value(c.new)}" for c in changed[:3])
            more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
            yield (f"stage {s.name} is stale: its params now differ from its lock ({what}{more}); "
                   f"the values shown are the recorded ones; run 'pivot run {s.name}'")


# -- revisions -------------------------------------------------------------------------------


def resolve(history: History, rev: str) -> str:
    """The commit id `rev` names; a repository without commits gets a message that says so."""
    try:
        return str(history.commit(rev).id)
    except GitError:
        if history.repo.head_is_unborn:
            raise GitError(f"unknown git revision '{rev}': this repository has no commits yet; "
                           "commit your work first (git commit), then diff against it") from None
        raise


# -- diffing (pure) ---------------------------------------------------------------------------


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def same(old: Any, new: Any) -> bool:
    if is_number(old) and is_number(new):
        return bool(old == new or (math.isnan(old) and math.isnan(new)))
    return json.dumps(old, sort_keys=True) == json.dumps(new, sort_keys=True)  # true != 1, NaN == NaN


@dataclass(frozen=True)
class Change:
    group: str  # a metric file's path, or a stage's name
    key: str
    old: Any = ABSENT
    new: Any = ABSENT

    @property
    def status(self) -> str:
        if self.old is ABSENT:
            return "added"
        if self.new is ABSENT:
            return "removed"
        return "unchanged" if same(self.old, self.new) else "modified"

    @property
    def delta(self) -> int | float | None:
        """new - old when both are finite numbers, exact in the decimals they were written with
        (0.85 - 0.8 is 0.05, not 0.04999999999999993)."""
        old, new = self.old, self.new
        if not (is_number(old) and is_number(new) and math.isfinite(old) and math.isfinite(new)):
            return None
        if isinstance(old, int) and isinstance(new, int):
            return new - old
        return float(Decimal(repr(new)) - Decimal(repr(old)))

    @property
    def percent(self) -> float | None:
        """The delta as a percentage of |old|; None when old is 0 or either value is not a number."""
        delta, old = self.delta, self.old
        if delta is None or old == 0:
            return None
        return round(delta / abs(float(old)) * 100, 2)


def diff(old: Values, new: Values, include_unchanged: bool = False) -> list[Change]:
    """Every value that differs between `old` and `new` (added, removed, modified), sorted by
    group and key; with `include_unchanged`, every value."""
    changes = [Change(g, k, old.get((g, k), ABSENT), new.get((g, k), ABSENT)) for g, k in sorted(set(old) | set(new))]
    return [c for c in changes if include_unchanged or c.status != "unchanged"]


# -- presenting (pure) ------------------------------------------------------------------------

MISSING_MARK = "-"


def format_value(value: Any) -> str:
    if value is ABSENT:
        return MISSING_MARK
    if isinstance(value, str) and value.isprintable():
        return value
    return json.dumps(value, ensure_ascii=False)


def format_change(c: Change) -> str:
    """The numeric delta (+0.05), or what happened to a non-numeric value; empty when unchanged."""
    status = c.status
    if status == "unchanged":
        return ""
    delta = c.delta
    if delta is not None:
        return f"{delta:+}"
    return "changed" if status == "modified" else status


def format_percent(c: Change) -> str:
    pct = c.percent
    return "" if pct is None or c.status == "unchanged" else f"{pct:+.2f}%"


def show_table(snapshot: Snapshot, group: str) -> tuple[list[str], list[list[str]]]:
    rows = [[g, k, format_value(v)] for (g, k), v in sorted(snapshot.values.items())]
    return [group, "key", "value"], rows


def diff_table(changes: list[Change], group: str) -> tuple[list[str], list[list[str]]]:
    rows = [[c.group, c.key, format_value(c.old), format_value(c.new), format_change(c), format_percent(c)]
            for c in changes]
    return [group, "key", "old", "new", "change", "%"], rows


def render(header: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    """Aligned columns for a terminal, or a markdown table."""
    if markdown:
        cells = [[cell.replace("|", "\\|") for cell in row] for row in [header, *rows]]
        lines = ["| " + " | ".join(row) + " |" for row in cells]
        lines.insert(1, "|" + "|".join("---" for _ in header) + "|")
        return "\n".join(lines)
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *rows])


def show_json(snapshot: Snapshot, group: str) -> dict[str, Any]:
    return {
        "rev": snapshot.rev,
        "commit": snapshot.commit,
        "values": [{group: g, "key": k, "value": v} for (g, k), v in sorted(snapshot.values.items())],
        "notes": list(snapshot.notes),
    }


def diff_json(old: Snapshot, new: Snapshot, changes: list[Change], group: str) -> dict[str, Any]:
    return {
        "old": {"rev": old.rev, "commit": old.commit},
        "new": {"rev": new.rev, "commit": new.commit},
        "changes": [
            {group: c.group, "key": c.key, "status": c.status,
             "old": None if c.old is ABSENT else c.old, "new": None if c.new is ABSENT else c.new,
             "change": c.delta, "percent": c.percent}
            for c in changes
        ],
        "notes": [*old.notes, *new.notes],
    }


def bad_metric(root: Path, name: str, records: Iterable[PathRecord]) -> str | None:
    """Why a Metric output stage `name` just wrote cannot be read as metrics, or None."""
    for path in (rec.path for rec in records if not rec.cached):
        try:
            data = read_workspace(root, path)
            if data is not None:
                parse_metric(data, path, f"as stage '{name}' wrote it")
        except MetricsError as exc:
            return str(exc)
    return None
