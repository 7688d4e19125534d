"""Output types a stage can declare."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Out:
    """A cached, git-ignored output (data, models)."""

    path: str
    kind = "out"
    cached = True
    incremental = False


@dataclass(frozen=True)
class Metric(Out):
    """A small JSON/YAML metrics file: not cached, committed to git."""

    kind = "metric"
    cached = False


@dataclass(frozen=True)
class Plot(Out):
    """A cached series (CSV/TSV/JSON) or image to plot."""

    x: str | None = None
    y: str | None = None
    kind = "plot"


@dataclass(frozen=True)
class IncrementalOut(Out):
    """An append-only output, restored as a writable copy before its stage runs."""

    kind = "incremental"
    incremental = True


OUTPUT_KINDS: dict[str, type[Out]] = {
    cls.kind: cls for cls in (Out, Metric, Plot, IncrementalOut)
}
