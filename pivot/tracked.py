"""Tracked data: one small committed record per path given to `pivot track`, in
.pivot/tracked/<encoded path>.yaml, written atomically and deterministically like lock files.

A record holds the path, the hash of its content (a directory: the hash of its manifest, as for
directory outputs), its size in bytes and, for a directory, its file count. The content itself
lives in the cache. This module reads and writes the records; it knows nothing of the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from pivot import atomic, yamlio
from pivot.errors import TrackError, YamlProblem
from pivot.layout import TRACKED_DIR, TRACKED_SUFFIX
from pivot.records import PathRecord, is_digest

TRACKED_SCHEMA = 1
FIX = "restore it from git ('git checkout -- FILE') or delete it and run 'pivot track PATH' again"


@dataclass(frozen=True)
class Tracked:
    """One tracked path (project-relative POSIX) and what it held when it was tracked."""

    path: str
    hash: str
    is_dir: bool
    size: int  # bytes (a directory: the sum of its files)
    files: int | None = None  # directories only

    @property
    def record(self) -> PathRecord:
        """As the cache, checkout and the remote speak of it."""
        return PathRecord(self.path, self.hash, self.is_dir)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema": TRACKED_SCHEMA, "path": self.path, "hash": self.hash, "size": self.size}
        if self.is_dir:
            d["dir"] = True
            d["files"] = self.files or 0
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Tracked:
        if not isinstance(d, dict):
            raise TypeError("expected a mapping")
        path, digest, size, files = d["path"], d["hash"], d["size"], d.get("files")
        if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
            raise ValueError("path must be a project-relative path")
        if not is_digest(digest):
            raise ValueError("hash must be 32 hex digits")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError("size must be a count of bytes")
        is_dir = d.get("dir", False)
        if not isinstance(is_dir, bool) or (files is not None and (not isinstance(files, int) or files < 0)):
            raise ValueError("dir must be true or false and files a count")
        return cls(path, digest, is_dir, size, files if is_dir else None)


def record_name(path: str) -> str:
    """The record's file name for `path`: the path percent-encoded (no '/'), then .yaml."""
    return quote(path, safe="") + TRACKED_SUFFIX


def record_path(root: Path, path: str) -> Path:
    return root / TRACKED_DIR / record_name(path)


def dumps(tracked: Tracked) -> str:
    return yamlio.dumps(tracked.to_dict())


# Plain YAML scalars that resolve to something other than a string (YAML 1.1, as PyYAML reads).
_NOT_STRINGS = {"yes", "no", "true", "false", "on", "off", "null"}
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")


def canonical_text(tracked: Tracked) -> str | None:
    """The record as `dumps` writes it, without YAML, when every value is written plain and
    reads back as itself: a path of letters, digits and `_./-` starting with a letter or `_`
    (not a word YAML reads as a boolean or null) and a hash with a letter in it (an all-digit
    or `0b` one would read as a number). None otherwise."""
    p, h = tracked.path, tracked.hash
    if not (p[:1].isalpha() or p[:1] == "_") or not _PLAIN.issuperset(p) or p.lower() in _NOT_STRINGS \
            or h.isdigit() or h.startswith("0b") or not is_digest(h):
        return None
    head = f"dir: true\nfiles: {tracked.files or 0}\n" if tracked.is_dir else ""
    return f"{head}hash: {h}\npath: {p}\nschema: {TRACKED_SCHEMA}\nsize: {tracked.size}\n"


def _read_canonical(text: str | bytes) -> dict[str, Any] | None:
    """What YAML would read from `text` when it is exactly what canonical_text writes for a
    record (the records `pivot track` writes), without importing YAML; None for anything else."""
    if isinstance(text, bytes):
        if not text.isascii():
            return None
        text = text.decode("ascii")
    fields = dict(line.partition(": ")[::2] for line in text.split("\n"))
    try:
        is_dir = fields.get("dir") == "true"
        tracked = Tracked(fields["path"], fields["hash"], is_dir, int(fields["size"]),
                          int(fields["files"]) if is_dir else None)
    except (KeyError, ValueError):
        return None
    return tracked.to_dict() if canonical_text(tracked) == text else None


def loads(text: str | bytes, where: str | Path, name: str | None = None) -> Tracked:
    """Parse a record's bytes; `where` names it in errors. With `name` (the record's file name),
    a record whose path does not match its name is refused too."""
    try:
        data = _read_canonical(text)
        tracked = Tracked.from_dict(data if data is not None else yamlio.parse(text))
    except YamlProblem as exc:
        line = f":{exc.line}" if exc.line is not None else ""
        raise TrackError(f"{where}{line}: {exc.problem}; {FIX}") from None
    except (KeyError, TypeError, ValueError) as exc:
        why = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise TrackError(f"{where}: not a tracked-data record ({why}); {FIX}") from None
    if name is not None and record_name(tracked.path) != name:
        raise TrackError(f"{where}: records '{tracked.path}', not '{unquote(name[:-len(TRACKED_SUFFIX)])}' "
                         f"as its name says; {FIX}")
    return tracked


def read(root: Path, path: str) -> Tracked | None:
    file = record_path(root, path)
    data = yamlio.read_limited(file, TrackError, file.relative_to(root))
    return None if data is None else loads(data, file.relative_to(root), file.name)


def read_all(root: Path) -> list[Tracked]:
    """Every record in the workspace, sorted by path."""
    folder = root / TRACKED_DIR
    if not folder.is_dir():
        return []
    found = []
    for file in sorted(folder.glob(f"*{TRACKED_SUFFIX}")):
        if file.name.startswith(".") or not file.is_file():
            continue
        data = yamlio.read_limited(file, TrackError, file.relative_to(root))
        if data is not None:
            found.append(loads(data, file.relative_to(root), file.name))
    return sorted(found, key=lambda t: t.path)


def paths(root: Path) -> list[str]:
    return [t.path for t in read_all(root)]


def write(root: Path, tracked: Tracked) -> bool:
    """Write atomically; an identical record is left untouched. True when the file changed."""
    file = record_path(root, tracked.path)
    data = dumps(tracked).encode()
    try:
        if file.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    file.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(file, data)
    return True


def remove(root: Path, path: str) -> bool:
    """Delete the record of `path`; False when there was none."""
    try:
        record_path(root, path).unlink()
    except FileNotFoundError:
        return False
    return True


def covering(tracked: list[Tracked], path: str) -> Tracked | None:
    """The record of `path` itself, or of a tracked directory that holds it."""
    for t in tracked:
        if path == t.path or path.startswith(t.path + "/"):
            return t
    return None
