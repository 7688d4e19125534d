"""The project's modules: which files and objects are user code, where a module's file is, its
summary (cached in the state DB by the file's size, mtime, ctime and inode, and its bytes' hash;
the groups of a large module in .pivot/tmp/pycache by their text), where an imported name was
defined, and which files were edited after the run began."""

from __future__ import annotations

import os
import sys
import time
import types
from typing import Any

import xxhash

from pivot import memolog
from pivot.fingerprint.manifest import CHANGED, FP_SCHEMA, entry_digest
from pivot.fingerprint.summary import GROUP_SCHEMA, GroupMemo, summarise
from pivot.hashing import RACY_NS
from pivot.importing import GROUPED
from pivot.layout import TMP_DIR
from pivot.state import State


class ModuleIndex:
    def __init__(self, root: str, state: State | None) -> None:
        self.root = root
        self.state = state
        # Created before the pipeline is imported (Repo does so): a file modified after this
        # may no longer be the code that was imported, and that workers run.
        self._started_ns = time.time_ns()
        self._edited: set[str] = set()
        self._summaries: dict[str, dict[str, Any] | None] = {}
        self.digests: dict[str, str] = {}  # file -> the hash of the bytes its summary was made from
        self._user: dict[str, bool] = {}
        self._rel: dict[str, str] = {}
        self._module_files: dict[str, str | None] = {}
        self._user_modules: dict[str, bool] = {}
        self._origins: dict[tuple[str, str], tuple[str, str]] = {}

    # -- user code -----------------------------------------------------------
    def is_user_file(self, filename: str | None) -> bool:
        """Code in the project (under the root, not in a virtualenv inside it)."""
        if not filename:
            return False
        known = self._user.get(filename)
        if known is None:
            full = os.path.abspath(filename)
            known = (full.startswith(self.root + os.sep) and "site-packages" not in full
                     and "dist-packages" not in full)
            self._user[filename] = known
        return known

    def is_user_module(self, name: str) -> bool:
        known = self._user_modules.get(name)
        if known is None:
            known = self._user_modules[name] = self.is_user_file(self.module_file(name))
        return known

    def owns(self, obj: Any) -> bool:
        """The object's code is in the project (by its code's file, else by its module)."""
        code = getattr(obj, "__code__", None)
        if code is not None:
            return self.is_user_file(code.co_filename)
        return self.is_user_module(getattr(obj, "__module__", "") or "")

    def is_user_code(self, obj: Any) -> bool:
        """A function, class or module of the project (whatever the import statements say)."""
        if isinstance(obj, types.ModuleType):
            return self.is_user_module(obj.__name__)
        return isinstance(obj, (types.FunctionType, type)) and self.owns(obj)

    def relpath(self, filename: str) -> str:
        rel = self._rel.get(filename)
        if rel is None:
            rel = os.path.relpath(filename, self.root).replace(os.sep, "/")
            self._rel[filename] = rel
        return rel

    # -- summaries -------------------------------------------------------------
    def summary(self, filename: str | None) -> dict[str, Any] | None:
        """The file's summary (see pivot.fingerprint.summary), from the state DB while the file's
        stat is unchanged, or while its bytes are (a checkout back and forth, a save without a
        change); None when it cannot be read or parsed."""
        if not filename:
            return None
        if filename in self._summaries:
            return self._summaries[filename]
        result: dict[str, Any] | None = None
        try:
            st = os.stat(filename)
        except OSError:
            self._summaries[filename] = None
            return None
        changed_ns = max(st.st_mtime_ns, st.st_ctime_ns)  # an mtime can be set back, a ctime cannot
        if self._started_ns < changed_ns <= time.time_ns():  # (a future time: clock skew, not an edit)
            self._edited.add(filename)
        key = f"fp{FP_SCHEMA}m:{self.relpath(filename)}"  # a sealed marshal row: a 2 MB module's decodes fast
        cached = self.state.get_sealed(key) if self.state else None
        if not isinstance(cached, dict):
            cached = None
        stat = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        if cached and cached["stat"] == stat and cached["checked"] - changed_ns >= RACY_NS:
            result = cached["summary"]
            self.digests[filename] = str(cached.get("hash"))
        else:
            result = self._summarise(filename, stat, key, cached)
        self._summaries[filename] = result
        return result

    def _summarise(self, filename: str, stat: list[int], key: str, cached: Any) -> dict[str, Any] | None:
        """Read the file (its stat taken before): the cached summary if its bytes are those it was
        made from, else summarised (with the groups of its last version, see GroupMemo)."""
        try:
            with open(filename, "rb") as f:
                data = f.read()
        except OSError:
            return None
        digest = self.digests[filename] = xxhash.xxh3_128_hexdigest(data)
        if cached and cached.get("hash") == digest:
            result: dict[str, Any] | None = cached["summary"]
        else:
            memo_file = self._memo_file(filename) if len(data) >= GROUPED else None
            log = memolog.read(memo_file) if memo_file else None
            memo = GroupMemo(_valid(log.entries)) if log is not None else None
            try:
                result = summarise(data.decode("utf-8", errors="surrogateescape"), filename, memo)
            except (SyntaxError, ValueError, RecursionError):
                result = None
            if memo is not None and log is not None and memo_file and memo.read:
                memolog.write(memo_file, log, memo.new, memo.fresh)  # appends the groups read now
        if result is not None and self.state:
            self.state.put_sealed(key, {"stat": stat, "checked": time.time_ns(), "hash": digest, "summary": result})
        return result

    def _memo_file(self, filename: str) -> str:
        """Where the summarised groups of a large module are kept (one file per module)."""
        name = xxhash.xxh3_128_hexdigest(f"{GROUP_SCHEMA}\0{FP_SCHEMA}\0{sys.version}\0{self.relpath(filename)}".encode(
            "utf-8", "surrogateescape"))
        return os.path.join(self.root, TMP_DIR, "pycache", f"summary-{name}")

    def module_summary(self, name: str) -> dict[str, Any] | None:
        filename = self.module_file(name)
        if not self.is_user_file(filename) or not filename or not filename.endswith(".py"):
            return None
        return self.summary(filename)

    def statement(self, module: str, name: str) -> tuple[str, list[str]] | None:
        """Digest and refs of the top-level statements that assign `name` in `module`."""
        summary = self.module_summary(module) if module and name else None
        if summary is None or name not in summary["binds"]:
            return None
        parts = [summary["stmts"][i] for i in summary["binds"][name]]
        digest = parts[0][0] if len(parts) == 1 else entry_digest("".join(p[0] for p in parts))
        return digest, sorted({r for p in parts for r in p[1]})

    def unless_edited(self, filename: str, digest: str, notes: list[str]) -> str:
        """The digest read from a file, unless the file changed since the run began: then the
        code that was imported (and runs) may differ from it, so it counts as changed."""
        if filename not in self._edited:
            return digest
        notes.append(f"{self.relpath(filename)}: modified while pivot was running; its code counts "
                     "as changed until the next run")
        return CHANGED

    # -- modules and imports ---------------------------------------------------
    def module_file(self, name: str) -> str | None:
        """The file of a module, without importing it (a module not loaded yet is looked for
        under the root only: anything else is not user code)."""
        if name in self._module_files:
            return self._module_files[name]
        found: str | None = None
        mod = sys.modules.get(name)
        if mod is not None:
            found = getattr(mod, "__file__", None)
            if found is None:  # a namespace package: user code if it lives under the root
                found = next((os.path.join(p, "") for p in getattr(mod, "__path__", []) if self.is_user_file(
                    os.path.join(p, "x"))), None)
        elif name:
            rel = os.path.join(*name.split("."))
            for base in [self.root, *(p for p in sys.path if p and self.is_user_file(os.path.join(p, "x")))]:
                for cand in (os.path.join(base, rel + ".py"), os.path.join(base, rel, "__init__.py")):
                    if os.path.isfile(cand):
                        found = cand
                        break
                if found:
                    break
        self._module_files[name] = found
        return found

    def _package_of(self, name: str) -> str:
        mod = sys.modules.get(name)
        package = getattr(mod, "__package__", None) if mod is not None else None
        if package is not None:
            return str(package)
        filename = self.module_file(name) or ""
        return name if filename.endswith("__init__.py") else name.rpartition(".")[0]

    def absolute(self, level: int, module: str, importer: str) -> str:
        """The absolute name of a module imported by `importer` (`from ..x import y`: level 2)."""
        if level == 0:
            return module
        base = self._package_of(importer)
        if level > 1:
            base = base.rsplit(".", level - 1)[0]
        return f"{base}.{module}" if module else base

    def origin(self, module: str, name: str) -> tuple[str, str]:
        """Where a module-level name was defined: follows `from x import y` through user
        modules, so a constant is keyed where it is written. ("m", ""): the module m itself."""
        known = self._origins.get((module, name))
        if known is None:
            known = self._origins[(module, name)] = self._find_origin(module, name, 0)
        return known

    def _find_origin(self, module: str, name: str, hops: int) -> tuple[str, str]:
        summary = self.module_summary(module)
        if summary is None or hops > 20 or name in summary["binds"]:
            return module, name
        imp = summary["imports"].get(name)
        if imp is not None:
            level, src, attr = imp
            absolute = self.absolute(level, src, module)
            if not attr:
                return absolute, ""
            if self.module_file(f"{absolute}.{attr}") is not None:
                return f"{absolute}.{attr}", ""
            if self.is_user_module(absolute):
                return self._find_origin(absolute, attr, hops + 1)
            return absolute, attr
        for level, src in summary["stars"]:
            absolute = self.absolute(level, src, module)
            mod = sys.modules.get(absolute)
            if mod is not None and hasattr(mod, name):
                if self.is_user_module(absolute):
                    return self._find_origin(absolute, name, hops + 1)
                return absolute, name
        return module, name


def _valid(entries: dict[Any, Any]) -> dict[str, Any]:
    """The entries of a summary memo that have its shape (a key, a list of six)."""
    return {k: v for k, v in entries.items() if isinstance(k, str) and isinstance(v, list) and len(v) == 6}
