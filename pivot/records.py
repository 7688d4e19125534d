"""Value records shared by storage, locks, history and execution: the bottom of the import graph.

Nothing here imports another `pivot` module, so the cache, lock files, git history, the
executors and the remote can all speak in these records without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar

_HEX = frozenset("0123456789abcdef")
T = TypeVar("T")


def assemble(cls: type[T], **values: Any) -> T:
    """An instance of the frozen dataclass `cls` from the values of all its fields, set as its
    __init__ would, without its one object.__setattr__ call per field (three times faster).
    For the hot loops of a no-op plan only (every stage of a 10,000-stage pipeline makes some)."""
    obj = object.__new__(cls)
    obj.__dict__.update(values)
    return obj


class OutputKind(StrEnum):
    """What a stage output is; the value is the word written in lock files (`type:`)."""

    OUT = "out"
    METRIC = "metric"
    PLOT = "plot"
    INCREMENTAL = "incremental"


def is_digest(value: object) -> bool:
    """A 32-hex-digit xxh3-128 digest, as object names and lock files use."""
    return isinstance(value, str) and len(value) == 32 and set(value) <= _HEX


@dataclass(frozen=True)
class PathRecord:
    """A path (relative to the project root, POSIX) and the hash of its content, as a lock
    file or a tracked-data record writes it. Directories are hashed by their manifest."""

    path: str
    hash: str
    is_dir: bool = False
    kind: OutputKind | None = None  # outputs only

    @property
    def cached(self) -> bool:
        """Whether the content lives in the cache (every output kind but a metric, which git keeps)."""
        return self.kind is not OutputKind.METRIC

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "hash": self.hash}
        if self.is_dir:
            d["dir"] = True
        if self.kind is not None:
            d["type"] = str(self.kind)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PathRecord:
        path, digest, kind = d["path"], d["hash"], d.get("type")
        if not isinstance(path, str) or not path:
            raise TypeError(f"path must be a string, got {path!r}")
        if not is_digest(digest):
            raise TypeError(f"hash of '{path}' must be 32 hex digits, got {digest!r}")
        if kind is not None and not isinstance(kind, str):
            raise TypeError(f"type of '{path}' must be a string")
        return cls(path=path, hash=digest, is_dir=bool(d.get("dir", False)),
                   kind=None if kind is None else OutputKind(kind))


class DirEntry(NamedTuple):
    """One file of a directory's manifest. A named tuple, not a dataclass: a manifest has up to
    hundreds of thousands, and a tuple is made five times faster."""

    path: str  # relative to the directory, POSIX
    hash: str
    size: int


@dataclass(frozen=True)
class PathHash:
    """The hash of a workspace path as found now; a directory carries its manifest's bytes, or
    `load`, which reads them when first asked for (an unchanged folder's manifest is not read
    from the state database unless something needs more than its hash)."""

    hash: str
    is_dir: bool
    given: bytes | None = field(default=None, repr=False)  # directories only
    load: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def manifest(self) -> bytes | None:
        if self.given is None and self.load is not None:
            object.__setattr__(self, "given", self.load())  # frozen: a value computed once
        return self.given


class FileMemo(NamedTuple):
    """A remembered file hash, keyed by the stat fields that must match for it to hold. The
    ctime is among them because the mtime can be set back (`cp -p`, `touch -d`, os.utime) after
    a same-size edit; the ctime cannot: any write or utime sets it to the present."""

    size: int
    mtime: int  # ns
    inode: int
    ctime: int  # ns
    checked: int  # ns: when the hash was taken (a hash taken too soon after mtime is not trusted)
    hash: str


class FileMemoRow(NamedTuple):
    """A FileMemo with its path, as stored."""

    path: str
    size: int
    mtime: int
    inode: int
    ctime: int
    checked: int
    hash: str


class FolderMemo(NamedTuple):
    """A remembered folder hash, keyed by the signature of one walk of it (every file's path,
    size, mtime, inode, mode and ctime, in the order the file system lists them)."""

    signature: str
    checked: int  # ns: when it was recorded (files modified less than RACY_NS before are re-read)
    hash: str


@dataclass(frozen=True)
class NeededOutput:
    """A cache object that the lock files of a revision (or the workspace) refer to."""

    hash: str
    path: str
    stage: str
    is_dir: bool
    commit: str  # the first commit (in walk order) that needs it, or "workspace"
