"""Importing user code so that the code that runs is always the code on disk.

Python trusts a cached .pyc when the source's size and mtime (whole seconds) match its
header, so a same-size edit saved within the same second as the previous version would run
the *old* code while Pivot fingerprints the new. Modules inside the project are therefore
compiled through a cache keyed by the hash of their source bytes (in .pivot/tmp/pycache),
which is never stale by construction.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import marshal
import os
import sys
import tempfile
from collections.abc import Sequence
from types import CodeType, ModuleType
from typing import Any

import xxhash


class FreshSourceLoader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname: str, path: str, cache_dir: str) -> None:
        super().__init__(fullname, path)
        self.cache_dir = cache_dir

    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        source = self.get_data(path)
        key = xxhash.xxh3_128_hexdigest(importlib.util.MAGIC_NUMBER + path.encode() + b"\0" + source)
        cached = os.path.join(self.cache_dir, key)
        try:
            with open(cached, "rb") as f:
                loaded = marshal.loads(f.read())
            if isinstance(loaded, CodeType):
                return loaded
        except (OSError, ValueError, EOFError, TypeError):
            pass
        code = compile_source(source, path)
        try:
            os.makedirs(self.cache_dir, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache_dir)
            with os.fdopen(fd, "wb") as f:
                f.write(marshal.dumps(code))
            os.replace(tmp, cached)
            _prune(self.cache_dir)
        except OSError:
            pass  # a read-only project still imports; it just compiles each time
        return code


_WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")  # UTF-16 and UTF-32, either byte order


def compile_source(source: bytes, path: str) -> CodeType:
    """Compile a module's bytes. Every SyntaxError names the file: Python leaves it out for NUL
    bytes, which is also how a UTF-16 or UTF-32 file looks, said here in plain words."""
    if source.startswith(_WIDE_BOMS):
        raise SyntaxError("the file is UTF-16 or UTF-32 text (it starts with a byte order mark); save it as UTF-8",
                          (path, 1, 1, None))
    try:
        code: CodeType = compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        if not exc.filename or exc.filename.startswith("<"):
            exc.filename = path
            if b"\x00" in source:
                exc.lineno = source[:source.index(b"\x00")].count(b"\n") + 1
        raise
    except ValueError as exc:  # older Pythons: "source code string cannot contain null bytes"
        raise SyntaxError(str(exc), (path, None, None, None)) from None
    return code


KEEP = 512  # compiled modules kept; every edit adds one, so the oldest go past twice this


def _prune(cache_dir: str, keep: int = KEEP) -> None:
    """After a compile (an edit), drop the oldest entries once there are more than 2 * keep.
    An entry still in use is simply compiled again the next time it is imported."""
    with os.scandir(cache_dir) as it:
        entries = [e for e in it if e.is_file(follow_symlinks=False)]
    if len(entries) <= 2 * keep:
        return
    entries.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime)
    for e in entries[:len(entries) - keep]:
        with contextlib.suppress(OSError):
            os.unlink(e.path)


class _ProjectFinder:
    """Hands modules found under the project root to FreshSourceLoader."""

    def __init__(self, root: str) -> None:
        self.root = root + os.sep
        self.cache_dir = os.path.join(root, ".pivot", "tmp", "pycache")

    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        origin = getattr(spec, "origin", None) or ""
        if spec is not None and origin.startswith(self.root) and origin.endswith(".py") \
                and "site-packages" not in origin and isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            spec.loader = FreshSourceLoader(name, origin, self.cache_dir)
        return spec


def install(root: str) -> None:
    """Put the project on sys.path and its modules behind FreshSourceLoader (idempotent)."""
    if root not in sys.path:
        sys.path.insert(0, root)
    if not any(isinstance(f, _ProjectFinder) and f.root == root + os.sep for f in sys.meta_path):
        sys.meta_path.insert(0, _ProjectFinder(root))


def loader_for(root: str, name: str, path: str) -> FreshSourceLoader:
    return FreshSourceLoader(name, path, os.path.join(root, ".pivot", "tmp", "pycache"))
