"""The code of a stage as it goes to a Dask worker: by value for the project's modules
(cloudpickle's `register_pickle_by_value`), by reference for everything installed; the package
versions the worker must match; the source texts a worker's traceback quotes. Used by
dask_client.py, on this machine only."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from pivot.executor.base import StageTask


class CodeSender:
    """Pickles stages' code for the workers of one run, remembering what it has read."""

    def __init__(self, root: Path, pickle: Any) -> None:
        self.root = root
        self._pickle = pickle  # the cloudpickle module
        self._sources: dict[str, str | None] = {}
        self._base_versions: dict[str, str] | None = None
        self.register_project_modules()

    def register_project_modules(self) -> None:
        """Every loaded module whose file is in the project goes by value; anything else (the
        standard library, installed packages, pivot) by reference, to be imported on the worker."""
        base = str(self.root) + os.sep
        for name, mod in list(sys.modules.items()):
            filename = getattr(mod, "__file__", None) or ""
            if filename.startswith(base) and "site-packages" not in filename and "dist-packages" not in filename \
                    and name.split(".")[0] != "pivot":
                try:
                    self._pickle.register_pickle_by_value(mod)
                except ValueError:  # not importable by that name (a __main__ script)
                    continue

    def code(self, task: StageTask) -> bytes:
        import importlib  # lazy: used per submission only
        import io  # lazy: used per submission only

        manifest = task.fingerprint.manifest if task.fingerprint else {}
        # A project module imported inside a function is not reached through globals: send it
        # whole (importing it here first if nothing has yet, as a local worker would).
        modules = {}
        imported = False
        for key in manifest:
            if key.startswith("module:"):
                name = key[7:]
                if name not in sys.modules:
                    try:
                        importlib.import_module(name)
                        imported = True
                    except Exception:
                        continue
                modules[name] = sys.modules[name]
        if imported:
            self.register_project_modules()

        buf = io.BytesIO()
        pickler_class()(buf, protocol=self._pickle.DEFAULT_PROTOCOL).dump((task.func, task.params, modules))
        return buf.getvalue()

    def versions(self, task: StageTask) -> tuple[tuple[str, str], ...]:
        if self._base_versions is None:
            from importlib import metadata  # lazy: once per run

            self._base_versions = {"python": f"{sys.version_info.major}.{sys.version_info.minor}"}
            for dist in ("pivot", "cloudpickle", "pydantic"):
                with contextlib.suppress(metadata.PackageNotFoundError):
                    self._base_versions[dist] = metadata.version(dist)
        found = {k: v for k, v in self._base_versions.items() if k != "pydantic" or task.params is not None}
        for key, version in (task.fingerprint.manifest if task.fingerprint else {}).items():
            if key.startswith("pkg:") and version != "unknown":
                found[key[4:]] = version
        return tuple(sorted(found.items()))

    def sources(self, task: StageTask) -> tuple[tuple[str, str], ...]:
        files = {str(self.root / v.partition(" ")[2]) for v in (task.fingerprint.manifest if task.fingerprint else {})
                 .values() if " " in v}
        code = getattr(task.func, "__code__", None)
        if code is not None:
            files.add(code.co_filename)
        out = []
        for f in sorted(files):
            if f not in self._sources:
                try:
                    self._sources[f] = Path(f).read_text(errors="replace") if os.path.getsize(f) < 2 ** 20 else None
                except OSError:
                    self._sources[f] = None
            text = self._sources[f]
            if text is not None:
                out.append((f, text))
        return tuple(out)


_PICKLER: type | None = None


def pickler_class() -> type:
    """cloudpickle's Pickler, except that code keeps its file name (cloudpickle writes
    "<dynamic-code>"), so a traceback on a worker names the file and line as it does here."""
    global _PICKLER
    if _PICKLER is None:
        import types  # lazy: once per process
        from collections import ChainMap  # lazy: once per process

        import cloudpickle  # lazy: only a Dask run needs it

        base = cloudpickle.Pickler
        reduce_code = base.dispatch_table[types.CodeType]

        def code_reduce(obj: types.CodeType) -> Any:
            fn, args = reduce_code(obj)
            return fn, tuple(obj.co_filename if isinstance(a, str) and a == "<dynamic-code>" else a for a in args)

        _PICKLER = type("CodePickler", (base,), {"dispatch_table": ChainMap({types.CodeType: code_reduce},
                                                                             base.dispatch_table)})
    return _PICKLER
