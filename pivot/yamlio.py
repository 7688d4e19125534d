"""The one YAML reader: safe loading, and every error names the file and, where the parser
knows it, the line.

PyYAML (its C loader when present) is imported only when a file is read, so importing this
module costs nothing at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pivot.errors import PivotError, YamlError


def _loader() -> Any:
    import yaml  # lazy: PyYAML costs start-up time that `pivot --help` does not need

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def loads(text: str | bytes, where: str | Path, error: type[PivotError] = YamlError) -> Any:
    """Parse YAML text read from `where` (a path, or `<sha>:<path>` for a git blob).

    Raises `error` (a PivotError subclass) with the file, the line and the parser's words."""
    import yaml  # lazy: see _loader

    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return yaml.load(text, Loader=_loader())
    except UnicodeDecodeError as exc:
        raise error(f"{where}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{where}{line}: invalid YAML ({problem}); fix the file and try again") from None


def load_mapping(path: Path, error: type[PivotError] = YamlError, *, missing_ok: bool = True) -> dict[str, Any]:
    """The top-level mapping of a YAML file; {} for an empty (or, with missing_ok, absent) file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise error(f"{path}: no such file") from None
    value = loads(data, path, error)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise error(f"{path}: expected a mapping (key: value lines) at the top level")
    return value


def dumps(value: Any) -> str:
    """Deterministic YAML: sorted keys, block style, no line wrapping."""
    import yaml  # lazy: see _loader

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text: str = yaml.dump(value, Dumper=dumper, sort_keys=True, default_flow_style=False,
                          allow_unicode=True, width=1000)
    return text
