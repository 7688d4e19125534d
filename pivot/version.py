"""Pivot's version, importable from any layer (pivot/__init__.py re-exports it)."""

__version__ = "0.1.0"
