"""`pivot run -S STAGE.FIELD=VALUE`: parameter values for a run, checked against the stage's
params model and written into params.yaml with its comments and layout kept.

`STAGE` is a params.yaml section: a stage's name, a sweep's name (`train`: every variant) or one
variant's (`train@model=tree,seed=1`). `FIELD` is a field of the stage's params model, or a
dotted path into nested models (`optim.lr`). `VALUE` is read as YAML, as if written in
params.yaml (`50`, `0.01`, `true`, `adam`, `[1, 2]`). Everything is checked before anything is
written: a bad setting leaves params.yaml as it was.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pivot import atomic, yamlio
from pivot import params as params_mod
from pivot.errors import ParamsError, YamlProblem
from pivot.layout import PARAMS_FILE
from pivot.stage import Stage

_FIELD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)=(.*)", re.DOTALL)
_NOTHING = object()
USAGE = "write -S STAGE.FIELD=VALUE, e.g. -S train.epochs=50"


@dataclass(frozen=True)
class Setting:
    spec: str  # as given: train.lr=0.01
    section: str  # the params.yaml section: a stage, a sweep or a variant
    field: tuple[str, ...]  # ("lr",), or ("optim", "lr") for a nested model
    value: Any
    text: str  # the value as given

    @property
    def shown(self) -> str:
        return f"{self.section}.{'.'.join(self.field)} = {self.text}"


def parse(specs: Sequence[str], stages: list[Stage]) -> list[Setting]:
    """The settings `specs` name, each checked against its stage's params model."""
    sections: dict[str, list[Stage]] = {}
    for s in stages:
        sections.setdefault(s.name, []).append(s)
        if s.sweep is not None:
            sections.setdefault(s.sweep, []).append(s)
    return [_parse_one(spec, sections) for spec in specs]


def _parse_one(spec: str, sections: dict[str, list[Stage]]) -> Setting:
    named = [n for n in sections if spec.startswith(n + ".")]
    if not named:
        with_params = sorted(n for n, ss in sections.items() if ss[0].params is not None and "@" not in n)
        guess = spec.split("=", 1)[0].split(".", 1)[0] if "." in spec.split("=", 1)[0] else spec
        raise ParamsError(f"-S {spec}: no stage named '{guess}' takes params ({USAGE}); stages with params: "
                          f"{', '.join(with_params) or 'none'}")
    section = max(named, key=len)  # names may hold dots: the longest one that fits
    match = _FIELD.fullmatch(spec[len(section) + 1:])
    if match is None:
        raise ParamsError(f"-S {spec}: expected a field name and '=' after '{section}.' ({USAGE})")
    field = tuple(match.group(1).split("."))
    stage = sections[section][0]
    if stage.params is None:
        raise ParamsError(f"-S {spec}: stage '{section}' takes no params; add params= to its @stage")
    _check_field(spec, stage, section, field)
    try:
        value = yamlio.parse(match.group(2))
    except YamlProblem as exc:
        raise ParamsError(f"-S {spec}: the value is not valid YAML ({exc.problem})") from None
    return Setting(spec, section, field, value, match.group(2))


def _check_field(spec: str, stage: Stage, section: str, field: tuple[str, ...]) -> None:
    from pydantic import BaseModel  # lazy: pydantic is loaded with the pipeline anyway

    model: Any = stage.params
    for depth, name in enumerate(field):
        fields = model.model_fields
        if name not in fields:
            where = ".".join(field[:depth]) or section
            raise ParamsError(f"-S {spec}: unknown field '{name}' of {where} ({model.__name__}); "
                              f"its fields: {', '.join(fields) or 'none'}")
        if depth == 0 and name in dict(stage.variant):
            raise ParamsError(f"-S {spec}: the matrix of sweep '{stage.sweep}' sets '{name}' for each variant; "
                              "run the variant you want by its name instead")
        annotation = fields[name].annotation
        nested = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if depth + 1 < len(field) and not nested:
            raise ParamsError(f"-S {spec}: field '{'.'.join(field[:depth + 1])}' is not a nested model; "
                              f"set it whole, e.g. -S {section}.{'.'.join(field[:depth + 1])}='{{a: 1}}'")
        model = annotation


def applied(overrides: dict[str, Any], settings: list[Setting], stages: list[Stage]) -> dict[str, Any]:
    """params.yaml's values with `settings` applied, after checking every stage they touch
    against its params model (a ParamsError names the setting, stage, field and the model's
    message). Nothing is written."""
    new = dict(overrides)
    for st in settings:
        section = dict(new.get(st.section) or {})
        new[st.section] = _set(section, st.field, st.value)
    touched = {st.section for st in settings}
    for s in stages:
        if s.params is not None and touched & {s.name, s.sweep}:
            try:
                params_mod.resolve(s, new)
            except ParamsError as exc:
                problem = str(exc).removeprefix(PARAMS_FILE + ": ")
                blamed = [st.spec for st in settings if st.section in (s.name, s.sweep) and any(
                    f"field '{'.'.join(st.field)}{end}" in problem for end in ("'", "."))]
                blamed = blamed or [st.spec for st in settings]
                raise ParamsError(f"-S {', -S '.join(blamed)}: {problem}; "
                                  f"nothing ran and {PARAMS_FILE} is unchanged") from None
    return new


def _set(mapping: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = dict(mapping)
    if len(path) == 1:
        out[path[0]] = value
    else:
        below = out.get(path[0])
        out[path[0]] = _set(below if isinstance(below, dict) else {}, path[1:], value)
    return out


def write(root: Path, settings: list[Setting], expected: dict[str, Any]) -> bool:
    """Set the values in params.yaml, keeping its comments, order and quoting; atomic. Returns
    whether the file changed (a value already there leaves it untouched). `expected`: what the
    file must read back as (from `applied`); otherwise nothing is written."""
    path = root / PARAMS_FILE
    before = path.read_text(encoding="utf-8") if path.exists() else ""
    yaml = _yaml()
    data = yaml.load(before) if before.strip() else None
    if data is None:
        from ruamel.yaml.comments import CommentedMap  # lazy: ruamel only when -S is used

        data = CommentedMap()
    for st in settings:
        node = data
        for key in (st.section, *st.field[:-1]):
            if not isinstance(node.get(key), dict):
                node[key] = type(data)()
            node = node[key]
        old = node.get(st.field[-1], _NOTHING)
        if old is _NOTHING or old != st.value or isinstance(old, bool) != isinstance(st.value, bool):
            node[st.field[-1]] = st.value
    out = io.StringIO()
    yaml.dump(data, out)
    text = out.getvalue()
    if text == before:
        return False
    if yamlio.parse(text) != expected:  # e.g. a string that YAML 1.1 reads as a boolean
        raise ParamsError(f"-S: cannot write {', '.join(s.spec for s in settings)} into {PARAMS_FILE} so that it "
                          f"reads back the same; quote the value or edit {PARAMS_FILE} by hand; it is unchanged")
    atomic.write_text(path, text)
    return True


def _yaml() -> Any:
    from ruamel.yaml import YAML  # lazy: ruamel costs ~30 ms, only -S needs it

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 1000
    return yaml
