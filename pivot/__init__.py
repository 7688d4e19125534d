"""Pivot: a git-integrated pipeline tool for Python. Mark functions with @stage; run what changed."""

from pivot.outputs import IncrementalOut, Metric, Out, Plot
from pivot.stage import stage
from pivot.sweep import expand
from pivot.version import __version__

__all__ = ["IncrementalOut", "Metric", "Out", "Plot", "__version__", "expand", "stage"]
