"""Pydantic parameter models merged with params.yaml overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pivot import yamlio
from pivot.errors import ParamsError
from pivot.layout import PARAMS_FILE, PARAMS_MEMO
from pivot.stage import Stage


def load_overrides(root: Path) -> dict[str, Any]:
    text = yamlio.read_limited(root / PARAMS_FILE, ParamsError, PARAMS_FILE)
    if text is None:
        return {}
    data = yamlio.remembered(root / PARAMS_MEMO, [text], lambda: [yamlio.loads(text, PARAMS_FILE, ParamsError)])[0]
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(f"{PARAMS_FILE}: expected one section per stage name (a mapping), got {type(data).__name__}")
    return data


def check_sections(overrides: dict[str, Any], stages: list[Stage]) -> None:
    """Every section of params.yaml must name a stage that has params (a sweep's name, for all
    its variants, or one variant's)."""
    by_name = {s.name: s for s in stages}
    for variant in stages:
        if variant.sweep is not None:
            by_name.setdefault(variant.sweep, variant)
    for section, values in overrides.items():
        s = by_name.get(section)
        if s is None:
            known = sorted(n for n, st in by_name.items() if st.params and "@" not in n)
            raise ParamsError(f"{PARAMS_FILE}: section '{section}' names no stage; stages with params: "
                              f"{', '.join(known) or 'none'}")
        if s.params is None:
            raise ParamsError(f"{PARAMS_FILE}: section '{section}': stage '{section}' takes no params; "
                              "add params= to its @stage or remove the section")
        if values is not None and not isinstance(values, dict):
            raise ParamsError(f"{PARAMS_FILE}: section '{section}' must be a mapping of field: value")


def section_of(s: Stage, overrides: dict[str, Any]) -> dict[str, Any]:
    """What params.yaml sets for stage `s`: its section; for a sweep variant, the sweep's section
    (`train:`) with the variant's own (`train@model=tree,seed=1:`) merged over it, key by key."""
    section = overrides.get(s.name) or {}
    if s.sweep is None:
        return dict(section)
    return merged(overrides.get(s.sweep) or {}, section)


def merged(under: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` laid over `under`; nested mappings are merged, anything else replaced."""
    out = dict(under)
    for key, value in over.items():
        below = out.get(key)
        out[key] = merged(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return out


def resolve(s: Stage, overrides: dict[str, Any]) -> Any:
    """The params instance for a stage: model defaults, updated by its params.yaml section, and
    for a sweep variant its matrix values over both."""
    assert s.params is not None
    from pydantic import ValidationError

    section = section_of(s, overrides)
    fields = s.params.model_fields  # type: ignore[attr-defined]
    for key in section:
        if key not in fields:
            raise ParamsError(
                f"{PARAMS_FILE}: stage '{s.name}', field '{key}': unknown parameter; "
                f"{s.params.__name__} has {', '.join(fields) or 'no fields'}"
            )
        if key in dict(s.variant):
            raise ParamsError(f"{PARAMS_FILE}: stage '{s.name}', field '{key}': the matrix of sweep "
                              f"'{s.sweep}' sets it for each variant; remove it from {PARAMS_FILE}")
    try:
        return s.params.model_validate({**section, **dict(s.variant)})  # type: ignore[attr-defined]
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ())) or "?"
        top = loc.split(".")[0]
        source = f"the matrix of sweep '{s.sweep}'" if top in dict(s.variant) else \
            PARAMS_FILE if top in section else f"the defaults of {s.params.__name__}"
        raise ParamsError(
            f"{source}: stage '{s.name}', field '{loc}': {err.get('msg')} (got {err.get('input')!r})"
        ) from None


def as_record(instance: Any) -> dict[str, Any]:
    record: dict[str, Any] = instance.model_dump(mode="json")
    return record
