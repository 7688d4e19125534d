"""Importing user code so that the code that runs is always the code on disk.

Python trusts a cached .pyc when the source's size and mtime (whole seconds) match its
header, so a same-size edit saved within the same second as the previous version would run
the *old* code while Pivot fingerprints the new. Modules inside the project are therefore
compiled through a cache keyed by the hash of their source bytes (in .pivot/tmp/pycache),
which is never stale by construction. The groups of a large module (below) are also kept, by
their text, so that an edit compiles only the groups it changed (`CodeMemo`).

A module is compiled one group of top-level statements at a time (`compile_chunks`), and the
groups run one after the other in the module's namespace: CPython's `compile` of a whole large
module holds every token and syntax node of it at once (a peak of about 230 MB for a 2 MB
pipeline of 10,000 stages, against 35 MB in groups, which also take less CPU time: 0.5 s
against 0.7 s). Line numbers, tracebacks and
`co_firstlineno` are those of the whole file.
"""

from __future__ import annotations
import __future__

import contextlib
import functools
import importlib.machinery
import importlib.util
import marshal
import operator
import os
import re
import sys
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

import xxhash

from pivot import atomic

_IMPORTED: dict[str, str] = {}  # file -> the hash of the bytes this process compiled of it


def imported_digest(path: str) -> str | None:
    """The xxh3_128 hex digest of the bytes of `path` that this process imported (the latest),
    or None when it did not import that file through FreshSourceLoader."""
    return _IMPORTED.get(path)


class FreshSourceLoader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname: str, path: str, cache_dir: str) -> None:
        super().__init__(fullname, path)
        self.cache_dir = cache_dir

    def get_code(self, fullname: str) -> CodeType:
        """The whole module as one code object (the loader protocol; imports use exec_module)."""
        code = self._cached(fullname, b"", compile_source)
        assert isinstance(code, CodeType)
        return code

    def get_codes(self, fullname: str) -> tuple[CodeType, ...]:
        """The module as groups of top-level statements, to run in order (`compile_chunks`)."""
        codes = self._cached(fullname, b"chunks1\0", self._compile_groups)
        assert isinstance(codes, tuple)
        return codes

    def exec_module(self, module: ModuleType) -> None:
        for code in self.get_codes(module.__name__):
            exec(code, module.__dict__)  # the user's module, as importlib would

    def _cached(self, fullname: str, kind: bytes, make: Any) -> CodeType | tuple[CodeType, ...]:
        path = self.get_filename(fullname)
        source = self.get_data(path)
        _IMPORTED[path] = xxhash.xxh3_128_hexdigest(source)
        key = xxhash.xxh3_128_hexdigest(importlib.util.MAGIC_NUMBER + kind + path.encode() + b"\0" + source)
        # A large module's groups: one entry per file, for its latest version (5 MB for a 2 MB
        # pipeline: one per version would add that much at every edit); its earlier versions'
        # groups are in the group memo (_compile_groups).
        name = "latest1-" + xxhash.xxh3_128_hexdigest(importlib.util.MAGIC_NUMBER + kind + path.encode()) \
            if kind and len(source) >= GROUPED else key
        loaded = self._load(name)
        if name != key:
            loaded = loaded[1] if isinstance(loaded, tuple) and len(loaded) == 2 and loaded[0] == key else None
        if isinstance(loaded, CodeType) or (
                isinstance(loaded, tuple) and all(isinstance(c, CodeType) for c in loaded)):
            return loaded  # checked just above
        code = make(source, path)
        self._store(name, code if name == key else (key, code))
        return code  # type: ignore[no-any-return]  # compile_source or compile_chunks

    def _compile_groups(self, source: bytes, path: str) -> tuple[CodeType, ...]:
        """compile_chunks, with the groups of this file's earlier versions (one entry per file,
        holding the groups of its latest version)."""
        if len(source) < GROUPED:
            return compile_chunks(source, path)
        from pivot import memolog  # lazy: only when a large module is compiled (an edit)

        name = os.path.join(self.cache_dir, "groups3-" + xxhash.xxh3_128_hexdigest(
            importlib.util.MAGIC_NUMBER + path.encode()))
        log = memolog.read(name)
        memo = CodeMemo({k: v for k, v in log.entries.items() if isinstance(k, bytes) and isinstance(v, tuple)
                         and len(v) == 2 and isinstance(v[0], int) and isinstance(v[1], CodeType)})
        codes = compile_chunks(source, path, memo)
        if memo.fresh:
            memolog.write(name, log, memo.new, memo.fresh)  # appends the groups compiled now
        return codes

    def _load(self, key: str) -> Any:
        try:
            with open(os.path.join(self.cache_dir, key), "rb") as f:
                return marshal.loads(f.read())
        except (OSError, ValueError, EOFError, TypeError):
            return None

    def _store(self, key: str, value: Any) -> None:
        try:  # its folder made when missing; no tempfile (it imports random and shutil: start-up)
            atomic.write_bytes(Path(self.cache_dir, key), marshal.dumps(value), new=True)
            _prune(self.cache_dir)
        except OSError:
            pass  # a read-only project still imports; it just compiles each time


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


# Where a group of top-level statements may start: a line beginning, at column 0, with `@` or a
# name that is neither a clause continuing a compound statement (else, elif, except, finally) nor
# a string prefix (r"..." could be a docstring), and not `from __future__` (it must stay with the
# statements before it, which alone may precede it). A candidate is only a start when the text
# before it compiles on its own: then the tokenizer is at a fresh top-level line there.
_CANDIDATE = re.compile(rb"^(?:@|(?!(?:else|elif|except|finally)\b)(?!from[ \t]+__future__\b)"
                        rb"[A-Za-z_][A-Za-z0-9_]*(?![A-Za-z0-9_'\"]))", re.MULTILINE)
_CANDIDATE_TEXT = re.compile(_CANDIDATE.pattern.decode(), re.MULTILINE | re.ASCII)
# The same after a line end, which the regex engine finds quickly (a `^` is tried at every position).
_AFTER_NL = re.compile(b"\n" + _CANDIDATE.pattern[1:])
_AFTER_NL_TEXT = re.compile("\n" + _CANDIDATE_TEXT.pattern[1:], re.ASCII)
GROUPED = 65536  # modules from this size on are read in groups of statements
# Groups are a few KiB: a 10,000-stage module compiles to about a thousand code objects and a
# 5 MiB cache entry (one group per statement: 10,000 and 8.5 MiB, slower to load in every
# worker); compiling and parsing cost the same CPU time either way. Where a group ends depends
# on the text around that point only (see `ends_group`), so an edit changes the groups it falls
# in and not those after it: compiled and summarised groups are remembered by their text.
GROUP = 1024  # a group is at least this long ...
GROUP_MAX = 16384  # ... and ends at the first start past this
GROUP_EVERY = 4  # in between, at a start whose line's checksum is a multiple of this
# Sources compiled whole (see compiled_whole).
# (Three searches: one pattern with the three alternatives tries each at every byte, 50 ms for 2 MB.)
_CODING = re.compile(rb"\A(?:[^\n]*\n)?[ \t\f]*#[^\n]*coding[:=]")
_LONE_CR = re.compile(rb"\r(?!\n)")
_GLOBAL = re.compile(rb"^global\b", re.MULTILINE)
# The bits of co_flags a `from __future__ import` sets, which compile() takes as flags.
_FUTURE_FLAGS = functools.reduce(operator.or_, (getattr(__future__, name).compiler_flag
                                                for name in __future__.all_feature_names))
MAX_RETRIES = 64  # times one group did not compile and was extended; past this, compile whole


class CodeMemo:
    """Compiled groups of a large module by their text (and the `from __future__` flags they were
    compiled with), each with the lines before it where it was last: an edit compiles again
    only the groups it changed, and moves those after it if it added or removed lines.
    `old`: as remembered; `new`: this version's groups, to remember next; `compiled`: how many
    groups were compiled now. A group whose compile warned is not remembered (its warnings are
    shown whenever it is compiled)."""

    def __init__(self, old: dict[bytes, tuple[int, CodeType]] | None = None) -> None:
        self.old = old or {}
        self.new: dict[bytes, tuple[int, CodeType]] = {}
        self.compiled = 0
        self.fresh: set[bytes] = set()  # keys of the groups compiled now (to append to the memo's file)


def compile_chunks(source: bytes, path: str, memo: CodeMemo | None = None) -> tuple[CodeType, ...]:
    """The module as code objects of consecutive groups of top-level statements (one group for a
    module under 64 KiB), with the line numbers of the whole file; run in order, they do what the
    whole module does. A SyntaxError is the whole file's (it is compiled whole to report it).
    With `memo`, groups it holds are not compiled again (see CodeMemo)."""
    if len(source) < GROUPED or compiled_whole(source):
        return (compile_source(source, path),)
    codes: list[CodeType] = []
    shown: list[warnings.WarningMessage] = []
    flags = retries = begin = line = 0
    for end in [*group_starts(source), len(source)]:
        if not ends_group(source, begin, end):
            continue  # a thousand code objects for a 2 MB module, not one per statement
        chunk = source[begin:end]
        code, caught = _compile_group(chunk, path, flags, line, memo)
        if code is None:
            retries += 1
            if retries > MAX_RETRIES:
                break
            continue  # the group goes on to the next start
        if not codes:
            flags = code.co_flags & _FUTURE_FLAGS
        codes.append(code)
        retries = 0
        shown += [warnings.WarningMessage(w.message, w.category, w.filename, w.lineno + line) for w in caught]
        line += chunk.count(b"\n")
        begin = end
    if begin < len(source):  # a group never compiled: the whole file's SyntaxError, or a pathological split
        return (compile_source(source, path),)
    for w in shown:  # warnings at their lines in the file, as a whole compile gives them
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return tuple(codes)


def _compile_group(chunk: bytes, path: str, flags: int, line: int,
                   memo: CodeMemo | None) -> tuple[CodeType | None, list[warnings.WarningMessage]]:
    """The group compiled, `line` lines into the file (None: it does not compile on its own),
    and its warnings (at its own lines)."""
    key = xxhash.xxh3_128_digest(flags.to_bytes(8, "little") + chunk) if memo is not None else b""
    if memo is not None:
        known = memo.new.get(key) or memo.old.get(key)
        if known is not None:
            code = _shifted(known[1], line - known[0])  # where the group was last, to where it is
            memo.new[key] = (line, code)
            return code, []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = _shifted(compile(chunk, path, "exec", flags=flags, dont_inherit=True), line)
        except (SyntaxError, ValueError):
            return None, []
    if memo is not None:
        memo.compiled += 1
        if not caught:
            memo.new[key] = (line, code)
            memo.fresh.add(key)
    return code, list(caught)


def ends_group(source: str | bytes, begin: int, end: int) -> bool:
    """Whether a group from `begin` ends before the start `end` (or at the end of `source`):
    once it is GROUP long, at a start whose line has a checksum that is a multiple of
    GROUP_EVERY, or the first start past GROUP_MAX. Groups are thus cut where the text is, not
    where the previous cut was: after an edit, the same text is cut the same way again."""
    if end >= len(source):
        return True
    if end - begin < GROUP:
        return False
    if end - begin >= GROUP_MAX:
        return True
    line = source[end:end + 120]
    data = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line
    return zlib.crc32(data.partition(b"\n")[0]) % GROUP_EVERY == 0


def group_starts(source: str | bytes) -> list[int]:
    """Offsets where a group of top-level statements may start (see _CANDIDATE): candidate lines,
    except those right after a decorator. The text before a start is a group only if it compiles
    (or parses) on its own; else the group goes on to the next start."""
    starts: list[int] = []
    first = _CANDIDATE.match(source) if isinstance(source, bytes) else _CANDIDATE_TEXT.match(source)
    after_decorator = first is not None and first.group()[:1] in ("@", b"@")  # (offset 0 is no start)
    found = _AFTER_NL.finditer(source) if isinstance(source, bytes) else _AFTER_NL_TEXT.finditer(source)
    for m in found:
        if not after_decorator:
            starts.append(m.start() + 1)
        after_decorator = m.group()[1:2] in ("@", b"@")
    return starts


def compiled_whole(source: bytes) -> bool:
    """Whether a module is compiled whole, not in groups: a coding declaration (groups are decoded
    as UTF-8), a lone CR (a line end for the tokenizer, not for counting lines here), a module-level
    `global` (compile checks it against assignments in earlier statements)."""
    return bool(_CODING.search(source) or (b"\r" in source and _LONE_CR.search(source))
                or ((source.startswith(b"global") or b"\nglobal" in source) and _GLOBAL.search(source)))


def _shifted(code: CodeType, lines: int) -> CodeType:
    """`code`, compiled from a group, at its place in the file: line numbers are stored relative
    to co_firstlineno, so moving that of every code object inside moves all their lines."""
    if not lines:
        return code
    consts = tuple(_shifted(c, lines) if isinstance(c, CodeType) else c for c in code.co_consts)
    return code.replace(co_firstlineno=code.co_firstlineno + lines, co_consts=consts)


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


def forget_project_modules() -> None:
    """Drop the project's modules (those FreshSourceLoader loaded) from sys.modules, so that the
    next import runs them again: a worker forked from the `pivot` process imports the pipeline and
    its helpers itself, into module state of its own, as a worker started afresh does."""
    for name, module in list(sys.modules.items()):
        if isinstance(getattr(module, "__loader__", None), FreshSourceLoader):
            del sys.modules[name]


def loader_for(root: str, name: str, path: str) -> FreshSourceLoader:
    return FreshSourceLoader(name, path, os.path.join(root, ".pivot", "tmp", "pycache"))
