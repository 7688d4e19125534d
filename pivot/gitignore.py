"""Keep cached output paths in a managed block of the project's .gitignore."""

from __future__ import annotations

from pathlib import Path

from pivot import atomic

BEGIN = "# >>> pivot: cached outputs (managed by pivot, do not edit this block)"
END = "# <<< pivot"


def update(root: Path, paths: list[str]) -> bool:
    """Rewrite the managed block to list exactly `paths`; True when the file changed."""
    target = root / ".gitignore"
    text = target.read_text() if target.exists() else ""
    lines = text.splitlines()
    if BEGIN in lines and END in lines[lines.index(BEGIN):]:
        start = lines.index(BEGIN)
        stop = lines.index(END, start)
        before, after = lines[:start], lines[stop + 1:]
    else:
        before, after = lines, []
    block = [BEGIN, *(f"/{p}" for p in sorted(set(paths))), END] if paths else []
    while before and not before[-1].strip() and block:
        before.pop()
    new_lines = before + ([""] if before and block else []) + block + after
    new_text = "\n".join(new_lines) + ("\n" if new_lines else "")
    if new_text == text:
        return False
    atomic.write_text(target, new_text)
    return True
