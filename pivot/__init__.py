"""Pivot: a git-integrated pipeline tool for Python. Mark functions with @stage; run what changed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pivot.outputs import IncrementalOut, Metric, Out, Plot
from pivot.stage import stage
from pivot.version import __version__


def expand(template: str, matrix: Mapping[str, Sequence[Any]]) -> list[str]:
    """Every path `template` names over a sweep's `matrix`, in the order of its variants, e.g.
    `deps=expand("metrics/{model}-{seed}.json", GRID)` for a stage that compares the sweep."""
    from pivot import sweep  # lazy: `pivot --help` does not need the sweep code

    return sweep.expand(template, matrix)


__all__ = ["IncrementalOut", "Metric", "Out", "Plot", "__version__", "expand", "stage"]
