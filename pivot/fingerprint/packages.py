"""Installed code by version: the manifest entry of a third-party or standard-library module
(`pkg:<distribution>` and its version, or `python:stdlib`), with the distribution lookups
cached in the state DB until something is installed or removed."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from pivot.fingerprint.manifest import FP_SCHEMA, PYTHON_VERSION
from pivot.state import State


class PackageVersions:
    def __init__(self, state: State | None, is_user_file: Callable[[str | None], bool]) -> None:
        self.state = state
        self._is_user_file = is_user_file
        self._tops: dict[str, list[str]] | None = None  # top-level module -> [key, version]
        self._signature: list[Any] = []
        self._dirty = False
        self._dists: Mapping[str, list[str]] | None = None

    def entry(self, module_name: str) -> tuple[str, str]:
        """The manifest key and value of the code of an installed (or standard) module."""
        top = (module_name or "builtins").split(".")[0]
        if top in sys.stdlib_module_names or top in ("builtins", "__future__"):
            return "python:stdlib", PYTHON_VERSION
        tops = self._known()
        if top not in tops:
            tops[top] = list(self._lookup_distribution(top))
            self._dirty = True
        key, version = tops[top]
        return key, version

    def save(self) -> None:
        """Writes the lookups made since the last save to the state DB."""
        if self._dirty and self.state:
            self.state.put_json(f"fp{FP_SCHEMA}:packages", {"signature": self._signature, "tops": self._tops})
        self._dirty = False

    def _site_signature(self) -> list[Any]:
        """Changes when packages are installed, upgraded or removed (their directories change)."""
        sig: list[Any] = [sys.version]
        for p in sys.path:
            if p and not self._is_user_file(os.path.join(p, "x")):
                try:
                    sig.append([p, os.stat(p).st_mtime_ns])
                except OSError:
                    continue
        return sig

    def _known(self) -> dict[str, list[str]]:
        if self._tops is None:
            self._signature = self._site_signature()
            cached = self.state.get_json(f"fp{FP_SCHEMA}:packages") if self.state else None
            if isinstance(cached, dict) and cached.get("signature") == self._signature:
                self._tops = dict(cached["tops"])
            else:
                self._tops = {}
        return self._tops

    def _lookup_distribution(self, top: str) -> tuple[str, str]:
        from importlib import metadata

        dist, version = top, None
        try:
            version = metadata.version(top)
        except (metadata.PackageNotFoundError, ValueError):
            dists = self._dists
            if dists is None:
                dists = self._dists = metadata.packages_distributions()
            for name in dists.get(top, []):
                try:
                    dist, version = name, metadata.version(name)
                    break
                except metadata.PackageNotFoundError:
                    continue
        if version is None:
            version = str(getattr(sys.modules.get(top), "__version__", "unknown"))
        return f"pkg:{dist}", version
