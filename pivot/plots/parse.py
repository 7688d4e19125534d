"""Parsing a plot file: CSV, TSV or JSON bytes into a `Table` of numeric series.

`parse_table` raises `PlotDataError` saying what does not fit (a missing column, a non-numeric
y, an unreadable file); whether that is an error or a note is the caller's call.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

from pivot.errors import PlotDataError
from pivot.plots.model import DELIMITERS, IMAGE_TYPES, ROW_INDEX, SERIES_SUFFIXES, Series, Table


def _number(value: Any) -> int | float | None:
    """A cell as a number; None for an empty cell (a gap); ValueError when it is not a number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(value)
    number: int | float
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            number = float(value.strip())
    else:
        number = value
    return None if isinstance(number, float) and not math.isfinite(number) else number


# Columns by name, each a list of raw cells; and how to name row i in a message.
Columns = dict[str, list[Any]]


def _read_delimited(text: str, delimiter: str) -> tuple[Columns, Callable[[int], str]]:
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() or f"column {i + 1}" for i, cell in enumerate(row)]
                continue
            if len(row) != len(header):
                raise PlotDataError(f"line {reader.line_num} has {len(row)} fields but the header has "
                                    f"{len(header)}; is it really {'TSV' if delimiter == chr(9) else 'CSV'}?")
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise PlotDataError(f"not readable as CSV (line {reader.line_num}: {exc})") from None
    if header is None:
        raise PlotDataError("the file is empty")
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise PlotDataError(f"the header names column '{dup}' twice")
    return {h: [r[i] for r in rows] for i, h in enumerate(header)}, lambda i: f"line {lines[i]}"


def _read_json(text: str) -> tuple[Columns, Callable[[int], str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlotDataError(f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if isinstance(data, dict):
        tables = [k for k, v in data.items() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)]
        if len(tables) == 1:
            data = data[tables[0]]  # {"train": [{...}, …]}
        elif len(tables) > 1:
            raise PlotDataError(f"holds several lists of records ({', '.join(tables)}); "
                                "a plot file must hold one table")
        elif data and all(isinstance(v, list) for v in data.values()):
            lengths = {len(v) for v in data.values()}
            if len(lengths) > 1:
                raise PlotDataError("its columns have different lengths")
            return dict(data), lambda i: f"item {i}"
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        names: dict[str, None] = {}
        for record in data:
            names.update(dict.fromkeys(record))
        return {n: [r.get(n) for r in data] for n in names}, lambda i: f"record {i}"
    raise PlotDataError('expected a list of records ([{"epoch": 1, "loss": 0.5}, …]) '
                        'or an object of columns ({"epoch": [1, 2], "loss": [0.5, 0.4]})')


def _read_columns(path: str, data: bytes) -> tuple[Columns, Callable[[int], str]]:
    suffix = Path(path).suffix.lower()
    if suffix not in SERIES_SUFFIXES:
        raise PlotDataError(f"'{suffix or path}' files cannot be plotted; use .csv, .tsv or .json "
                            f"series, or an image ({', '.join(IMAGE_TYPES)})")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PlotDataError("not UTF-8 text") from None
    return _read_json(text) if suffix == ".json" else _read_delimited(text, DELIMITERS[suffix])


def _numeric(values: list[Any]) -> list[int | float | None] | None:
    try:
        return [_number(v) for v in values]
    except ValueError:
        return None


def _first_non_number(values: list[Any], row: Callable[[int], str]) -> str:
    for i, v in enumerate(values):
        try:
            _number(v)
        except ValueError:
            return f"{json.dumps(v) if not isinstance(v, str) else repr(v)} on {row(i)}"
    return ""


def _choose_x(columns: Columns, x: str | None, y: str | None) -> str | None:
    """The x column: as declared; else the first column, unless it is the only one or is y
    (then None: the row number)."""
    if x is not None:
        return x
    names = list(columns)
    if len(names) < 2 or names[0] == y:
        return None
    return names[0]


def parse_table(path: str, data: bytes, x: str | None = None, y: str | None = None) -> Table:
    """The series of a CSV, TSV or JSON file. Raises PlotDataError saying what does not fit."""
    columns, row = _read_columns(path, data)
    available = ", ".join(columns) or "none"
    for role, name in (("x", x), ("y", y)):
        if name is not None and name not in columns:
            raise PlotDataError(f"{role} column '{name}' not found; its columns are: {available}")
    x_name = _choose_x(columns, x, y)
    n = len(next(iter(columns.values()), []))
    if n == 0:
        raise PlotDataError("it has a header but no rows of data")
    if x_name is None:
        x_values: list[Any] = list(range(n))
    else:
        numeric_x = _numeric(columns[x_name])
        x_values = numeric_x if numeric_x is not None else [_label(v) for v in columns[x_name]]
    series = []
    for name in [y] if y is not None else [c for c in columns if c != x_name]:
        values = _numeric(columns[name])
        if values is None:
            if y is not None:
                raise PlotDataError(f"y column '{name}' is not numeric: {_first_non_number(columns[name], row)}")
            continue  # with y unset, only the numeric columns are drawn
        series.append(Series(name, tuple(values)))
    if not series:
        raise PlotDataError(f"no numeric column to draw besides x '{x_name or ROW_INDEX}' "
                            f"(columns: {available}); set y= on the Plot")
    return Table(x_name or ROW_INDEX, tuple(x_values), tuple(series), _mode(x_values))


def _label(value: Any) -> str:
    """A non-numeric x value, as the text the axis shows."""
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)


def _mode(x: list[Any]) -> str:
    numbers = [v for v in x if v is not None]
    if not all(isinstance(v, (int, float)) for v in numbers):
        return "line"
    return "line" if all(a <= b for a, b in pairwise(numbers)) else "scatter"


