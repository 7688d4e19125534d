"""Keep cached output paths in a managed block of the project's .gitignore.

The file is handled as bytes: whatever the user wrote outside the block (any encoding, NUL
bytes, CRLF line endings, no final newline) is kept byte for byte. The block's lines end as the
file's first line does. A .gitignore that cannot be edited safely (a folder, a link, unreadable,
over MAX_BYTES) is refused with one line before anything is written.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pivot import atomic
from pivot.errors import ProjectError

BEGIN = "# >>> pivot: cached outputs (managed by pivot, do not edit this block)"
END = "# <<< pivot"
MAX_BYTES = 64 * 1024 * 1024


def update(root: Path, paths: list[str]) -> bool:
    """Rewrite the managed block to list exactly `paths`; True when the file changed."""
    target = root / ".gitignore"
    data = _read(target)
    eol = b"\r\n" if data.split(b"\n", 1)[0].endswith(b"\r") and b"\n" in data else b"\n"
    lines = _split_on_newline(data)
    bare = [line.rstrip(b"\r\n") for line in lines]
    begin, end = BEGIN.encode(), END.encode()
    if begin in bare and end in bare[bare.index(begin):]:
        start = bare.index(begin)
        stop = bare.index(end, start)
        before, after = lines[:start], lines[stop + 1:]
    else:
        before, after = lines, []
    block = [begin, *(b"/" + pattern(p).encode() for p in sorted(set(paths))), end] if paths else []
    while before and not before[-1].strip() and block:
        before.pop()
    if before and not before[-1].endswith(b"\n") and (block or after):
        before[-1] += eol  # the user's last line, now followed by the block: only terminated
    new = b"".join(before) + (eol if before and block else b"") + b"".join(line + eol for line in block)
    new += b"".join(after)
    if new == data:
        return False
    try:
        atomic.write_bytes(target, new)
    except OSError as exc:
        raise ProjectError(f"cannot write {target} ({exc.strerror or exc}); Pivot lists cached outputs there: "
                           "make it writable and run again") from None
    return True


def pattern(path: str) -> str:
    """`path` as a .gitignore pattern that matches it alone: glob characters (a sweep value such
    as `[64,32]` puts brackets in a path) and a trailing space are escaped with a backslash."""
    if "\\" not in path and "*" not in path and "?" not in path and "[" not in path and not path.endswith(" "):
        return path  # nothing to escape (almost every path: one per cached output on every run)
    escaped = "".join("\\" + c if c in "\\*?[" else c for c in path)
    return escaped[:-1] + "\\ " if escaped.endswith(" ") else escaped


def _split_on_newline(data: bytes) -> list[bytes]:
    """Lines as git reads them (split on LF only: a lone CR stays inside its line), with ends."""
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    return [*lines, parts[-1]] if parts[-1] else lines


def _read(target: Path) -> bytes:
    """The file's bytes (b"" when there is none), or one-line refusal naming it."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise ProjectError(f"cannot read {target} ({exc.strerror or exc}); fix it and run again") from None
    if stat.S_ISLNK(st.st_mode):
        raise ProjectError(f"{target} is a symbolic link, which git does not read as a .gitignore and Pivot "
                           "will not replace: make it a regular file and run again")
    if not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ProjectError(f"{target} is {what}; Pivot lists cached outputs in the .gitignore file there: "
                           "move it away and run again")
    if st.st_size > MAX_BYTES:
        raise ProjectError(f"{target} is {st.st_size // (1024 * 1024)} MiB, over the {MAX_BYTES // (1024 * 1024)} "
                           "MiB Pivot edits; shorten it and run again")
    try:
        return target.read_bytes()
    except OSError as exc:
        raise ProjectError(f"cannot read {target} ({exc.strerror or exc}); fix it and run again") from None
