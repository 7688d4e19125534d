"""A lock file is written by a direct emitter for the usual lock (pivot/lock.py `dumps`); its
bytes must be exactly those PyYAML writes (`yamlio.dumps(lock.to_dict())`), whatever the lock
holds: odd paths, manifest keys, notes and params fall back to PyYAML, and typical ones must
come out the same. Checked over arbitrary locks by hypothesis (fixed budget, derandomised)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pivot import lock as lockfile
from pivot import yamlio
from pivot.lock import StageLock
from pivot.records import OutputKind, PathRecord

PROPERTY = settings(max_examples=400, derandomize=True, deadline=None)

# Strings a lock usually holds (paths, hex digests, manifest keys such as func:pkg.mod.f) and
# near misses: values PyYAML reads as numbers, booleans, dates or null, indicators, long lines.
TYPICAL = st.from_regex(r"[A-Za-z0-9_./][A-Za-z0-9_./+-]{0,12}(?:[ :][A-Za-z0-9_./+-]{1,8}){0,3}", fullmatch=True)
TRICKY = st.sampled_from([
    "3.11", "1", "0x1f", "0o17", "1_000", "1e5", "1.0e+5", ".5", ".inf", ".NaN", "yes", "No", "ON", "off", "null",
    "Null", "~", "true", "False", "y", "n", "=", "<<", "2024-01-01", "2001-12-14t21:59:43.10-05:00", "12:30:45",
    "190:20:30", "---", "...", "---x", "...x", "-", "-a", "?a", ":a", "a:", "a: b", "a #b", "a#b", "#a", " a", "a ",
    "a  b", "a\tb", "a\nb", "'a'", '"a"', "a'b", "é", "日本", "\u2028", "\x85", "", "data/ü.csv", "a" * 99,
    "a" * 100, "a" * 101, "a" * 128, "a " * 199 + "b", "a " * 200 + "b", "b" * 401, "b" * 400,
])
TEXT = st.one_of(TYPICAL, TRICKY, st.text(max_size=30), TYPICAL.map(lambda s: s * 40))
HEX = st.from_regex(r"[0-9a-f]{32}", fullmatch=True)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT)
PARAMS = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(TEXT, inner, max_size=3)), max_leaves=8)


@st.composite
def records(draw: Any, outputs: bool) -> PathRecord:
    kind = draw(st.sampled_from(list(OutputKind))) if outputs else None
    return PathRecord(draw(TEXT.filter(bool)), draw(st.one_of(HEX, HEX, TEXT)), draw(st.booleans()), kind)


@st.composite
def locks(draw: Any) -> StageLock:
    paths = st.lists(records(False), max_size=3, unique_by=lambda r: r.path)
    outs = st.lists(records(True), max_size=3, unique_by=lambda r: r.path)
    return StageLock(
        fingerprint=draw(st.one_of(HEX, HEX, TEXT)),
        code_manifest=draw(st.dictionaries(TEXT, TEXT, max_size=4)),
        params=draw(st.one_of(st.none(), st.dictionaries(TEXT, PARAMS, max_size=3))),
        deps=tuple(draw(paths)),
        outs=tuple(draw(outs)),
        notes=tuple(draw(st.lists(TEXT, max_size=2))),
    )


@PROPERTY
@given(locks())
def test_a_lock_is_written_byte_for_byte_as_pyyaml_writes_it(lock: StageLock) -> None:
    text = lockfile.dumps(lock)
    assert text == yamlio.dumps(lock.to_dict())


def test_a_typical_lock_is_written_as_pyyaml_writes_it() -> None:
    lock = StageLock("b136d6f2d273d10eb1b4d62fb8109c49",
                     {"func:pipeline.train": "f1fb326603bae1ed pipeline.py", "python:stdlib": "3.11"},
                     {"lr": 0.1, "name": "yes"}, (PathRecord("data/in.csv", "8ad935d699a39c8ffa940dc57f75da1d"),),
                     (PathRecord("model", "104c4f1a628bac7768b320aed9b6189d", True, OutputKind.OUT),
                      PathRecord("metrics.json", "00000000000000000000000000000001", False, OutputKind.METRIC)),
                     ("a note",))
    assert lockfile.dumps(lock) == yamlio.dumps(lock.to_dict()) == (
        "code:\n  fingerprint: b136d6f2d273d10eb1b4d62fb8109c49\n  manifest:\n"
        "    func:pipeline.train: f1fb326603bae1ed pipeline.py\n    python:stdlib: '3.11'\n"
        "  notes:\n  - a note\ndeps:\n- hash: 8ad935d699a39c8ffa940dc57f75da1d\n  path: data/in.csv\n"
        "outs:\n- hash: '00000000000000000000000000000001'\n  path: metrics.json\n  type: metric\n"
        "- dir: true\n  hash: 104c4f1a628bac7768b320aed9b6189d\n  path: model\n  type: out\n"
        "params:\n  lr: 0.1\n  name: 'yes'\nschema: 1\n")


# Plain scalars near PyYAML's implicit types: numbers in every base and with separators, dates and
# times, booleans, null, indicators.
NEAR_TYPES = st.from_regex(r"[-+.~<=!&*0-9yYnNtTfFoO][-+.:_ 0-9a-fA-FxobeEtTZnNIl]{0,24}", fullmatch=True)


@PROPERTY
@given(st.one_of(TEXT, NEAR_TYPES))
def test_which_plain_scalars_read_as_strings_is_pyyamls_answer(text: str) -> None:
    # Writing a lock does not import PyYAML: lock.reads_as_string has its resolver's patterns.
    import yaml

    resolver: Any = yaml.resolver.Resolver()
    assert lockfile.reads_as_string(text) == (resolver.resolve(yaml.ScalarNode, text, (True, False))
                                              == "tag:yaml.org,2002:str")
