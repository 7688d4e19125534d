"""Output types a stage can declare."""

from __future__ import annotations

from dataclasses import dataclass

from pivot.records import OutputKind


@dataclass(frozen=True)
class Out:
    """A cached, git-ignored output (data, models)."""

    path: str
    kind = OutputKind.OUT
    cached = True
    incremental = False


@dataclass(frozen=True)
class Metric(Out):
    """A small JSON/YAML metrics file: not cached, committed to git."""

    kind = OutputKind.METRIC
    cached = False


@dataclass(frozen=True)
class Plot(Out):
    """A cached series (CSV/TSV/JSON) or image to plot."""

    x: str | None = None
    y: str | None = None
    kind = OutputKind.PLOT


@dataclass(frozen=True)
class IncrementalOut(Out):
    """An append-only output, restored as a writable copy before its stage runs."""

    kind = OutputKind.INCREMENTAL
    incremental = True


OUTPUT_KINDS: dict[OutputKind, type[Out]] = {
    cls.kind: cls for cls in (Out, Metric, Plot, IncrementalOut)
}
