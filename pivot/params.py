"""Pydantic parameter models merged with params.yaml overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pivot import yamlio
from pivot.errors import ParamsError
from pivot.layout import PARAMS_FILE
from pivot.stage import Stage


def load_overrides(root: Path) -> dict[str, Any]:
    text = yamlio.read_limited(root / PARAMS_FILE, ParamsError, PARAMS_FILE)
    if text is None:
        return {}
    data = yamlio.loads(text, PARAMS_FILE, ParamsError)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(f"{PARAMS_FILE}: expected one section per stage name (a mapping), got {type(data).__name__}")
    return data


def check_sections(overrides: dict[str, Any], stages: list[Stage]) -> None:
    """Every section of params.yaml must name a stage that has params."""
    by_name = {s.name: s for s in stages}
    for section, values in overrides.items():
        s = by_name.get(section)
        if s is None:
            raise ParamsError(f"{PARAMS_FILE}: section '{section}' names no stage; stages with params: "
                              f"{', '.join(sorted(n for n, st in by_name.items() if st.params)) or 'none'}")
        if s.params is None:
            raise ParamsError(f"{PARAMS_FILE}: section '{section}': stage '{section}' takes no params; "
                              "add params= to its @stage or remove the section")
        if values is not None and not isinstance(values, dict):
            raise ParamsError(f"{PARAMS_FILE}: section '{section}' must be a mapping of field: value")


def resolve(s: Stage, overrides: dict[str, Any]) -> Any:
    """The params instance for a stage (model defaults updated by its params.yaml section)."""
    assert s.params is not None
    from pydantic import ValidationError

    section = overrides.get(s.name) or {}
    fields = s.params.model_fields  # type: ignore[attr-defined]
    for key in section:
        if key not in fields:
            raise ParamsError(
                f"{PARAMS_FILE}: stage '{s.name}', field '{key}': unknown parameter; "
                f"{s.params.__name__} has {', '.join(fields) or 'no fields'}"
            )
    try:
        return s.params.model_validate(section)  # type: ignore[attr-defined]
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ())) or "?"
        source = PARAMS_FILE if loc.split(".")[0] in section else f"the defaults of {s.params.__name__}"
        raise ParamsError(
            f"{source}: stage '{s.name}', field '{loc}': {err.get('msg')} (got {err.get('input')!r})"
        ) from None


def as_record(instance: Any) -> dict[str, Any]:
    record: dict[str, Any] = instance.model_dump(mode="json")
    return record
