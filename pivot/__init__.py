"""Pivot: a git-integrated pipeline tool for Python. Mark functions with @stage; run what changed."""

from pivot.outputs import IncrementalOut, Metric, Out, Plot
from pivot.stage import stage

__all__ = ["IncrementalOut", "Metric", "Out", "Plot", "stage"]
__version__ = "0.1.0"
