"""The records plots are read into and drawn from, the file types a plot can be, and the errors."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKSPACE = "workspace"
DELIMITERS = {".csv": ",", ".tsv": "\t"}
SERIES_SUFFIXES = (".csv", ".tsv", ".json")
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
}
ROW_INDEX = "row"  # the x axis when a file has no column to use as x
INSTALL_HINT = "pip install 'pivot[plots]'"


@dataclass(frozen=True)
class PlotDef:
    """A Plot output as the current pipeline declares it."""

    path: str
    stage: str | None
    x: str | None = None
    y: str | None = None


@dataclass(frozen=True)
class Revision:
    name: str  # as the user typed it, or "workspace"
    commit: str | None = None  # None for the workspace

    @property
    def label(self) -> str:
        if self.commit is None or self.commit.startswith(self.name):
            return self.name if self.commit is None else self.commit[:7]
        return f"{self.name} ({self.commit[:7]})"


@dataclass(frozen=True)
class Series:
    name: str
    values: tuple[float | None, ...]


@dataclass(frozen=True)
class Table:
    """The series of one file: one x column and one or more numeric y columns."""

    x_name: str
    x: tuple[Any, ...]
    series: tuple[Series, ...]
    mode: str  # "line" (x in order, or not numeric) or "scatter" (numeric x out of order)


@dataclass(frozen=True)
class Image:
    mime: str
    data: bytes

    def data_uri(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode()}"


@dataclass(frozen=True)
class Version:
    """One plot file at one revision: a table, an image, or a note saying why there is neither."""

    rev: Revision
    source: str | None = None  # the file read: a workspace path or a cache object
    table: Table | None = None
    image: Image | None = None
    note: str | None = None


@dataclass(frozen=True)
class PlotView:
    """One plot file across the revisions asked for."""

    path: str
    definition: PlotDef
    versions: tuple[Version, ...]

    @property
    def is_image(self) -> bool:
        return Path(self.path).suffix.lower() in IMAGE_TYPES
