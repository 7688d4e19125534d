"""Every file Pivot reads survives hostile content: it loads, or the command fails with one
`error:` line naming the file, exit 1, and nothing on disk changes.

Two levels: the readers themselves fed random bytes and random documents by hypothesis (a fixed
example budget, derandomised so CI sees the same examples every run), and the real CLI fed a
catalogue of known-bad contents in each file it reads.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Project
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_errors import _build_with_params, assert_same_tree, cloned, snapshot

from pivot import graph, yamlio
from pivot import lock as lockfile
from pivot.errors import LockError, MetricsError, PivotError, PlotDataError, YamlError
from pivot.metrics import parse_metric
from pivot.plots import parse_table

FUZZ = settings(max_examples=150, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

BOMB = b"".join([b"a: &a [x,x,x,x,x,x,x,x,x]\n",
                 *(f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n".encode() for p, c in zip("abcdefg", "bcdefgh",
                                                                                      strict=True)),
                 b"z: [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"])

# Known-bad contents, each a way a real file gets damaged or a hostile one is made.
HOSTILE: dict[str, bytes] = {
    "invalid UTF-8": b"train:\n  epochs: \xff\xfe5\n",
    "UTF-16 with BOM": "train:\n  epochs: 5\n".encode("utf-16"),
    "UTF-16 without BOM": "train:\n  epochs: 5\n".encode("utf-16-le"),
    "UTF-32 with BOM": "train:\n  epochs: 5\n".encode("utf-32"),
    "UTF-32 without BOM": "train:\n  epochs: 5\n".encode("utf-32-le"),
    "NUL bytes": b"train:\n  epochs: 5\x00\n",
    "10,000-deep lists": b"[" * 10_000 + b"]" * 10_000,
    "10,000-deep mappings": b"".join(b"  " * i + b"k:\n" for i in range(10_000)),
    "an integer of 5,000 digits": b"train:\n  epochs: " + b"9" * 5000 + b"\n",
    "a float beyond range": b"train:\n  epochs: 1.0e999999\n",
    "an alias bomb": BOMB,
    "duplicate keys": b"train:\n  epochs: 5\n  epochs: 6\n",
    "a tag that constructs an object": b"train: !!python/object/apply:os.system ['echo owned']\n",
    "a YAML list at the top": b"- 1\n- 2\n",
}


# -- the YAML reader ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_yaml_reader_refuses_or_loads_each_hostile_file(name: str) -> None:
    try:
        yamlio.loads(HOSTILE[name], "f.yaml")
    except YamlError as exc:
        assert str(exc).startswith("f.yaml"), exc
        assert "\n" not in str(exc)


def test_alias_bomb_is_refused_quickly() -> None:
    import time

    start = time.perf_counter()
    with pytest.raises(YamlError, match="YAML aliases"):
        yamlio.loads(BOMB, "bomb.yaml")
    assert time.perf_counter() - start < 5


def test_duplicate_key_names_the_line() -> None:
    with pytest.raises(YamlError, match=r"^f\.yaml:3: duplicate key 'epochs'"):
        yamlio.loads(HOSTILE["duplicate keys"], "f.yaml")


def test_a_file_over_the_size_limit_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "params.yaml"
    with open(big, "wb") as f:
        f.truncate(200 * 1024 * 1024)  # sparse: 200 MB of NULs without writing them
    with pytest.raises(YamlError, match="too large"):
        yamlio.load_mapping(big)


@FUZZ
@given(st.binary(max_size=400))
def test_yaml_reader_on_random_bytes(data: bytes) -> None:
    try:
        yamlio.loads(data, "f.yaml")
    except YamlError as exc:
        assert str(exc).startswith("f.yaml") and "\n" not in str(exc)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30)


@FUZZ
@given(JSONISH)
def test_yaml_reader_round_trips_structured_documents(value: Any) -> None:
    """What Pivot writes (yamlio.dumps), Pivot reads back unchanged."""
    assert yamlio.loads(yamlio.dumps(value), "f.yaml") == value


# -- declared paths ---------------------------------------------------------------------------------


@FUZZ
@given(st.text(alphabet="ab./\\: \n\tépg", max_size=14) | st.sampled_from(
    [".pivot", ".pivot/x", ".git", ".gitx", "a/.pivot", "C:x", "a:b", "...", "a/..b", "x/..", "./a", "a//b"]))
def test_paths_already_normal_pass_the_fast_path_unchanged(path: str) -> None:
    """A declared path the one-match fast path accepts is one the full checks return unchanged
    (so the fast path accepts nothing they refuse, and changes nothing they keep)."""
    if graph.is_normal(path):
        assert graph.normal_form(path, "s", "dep") == path


# -- lock files, metrics, plots: the readers behind them ------------------------------------------


@FUZZ
@given(st.binary(max_size=400) | JSONISH.map(lambda v: yamlio.dumps(v).encode()))
def test_lock_reader_on_random_content(data: bytes) -> None:
    try:
        lockfile.loads(data, ".pivot/stages/s.lock")
    except LockError as exc:
        assert str(exc).startswith(".pivot/stages/s.lock") and "\n" not in str(exc)


@FUZZ
@given(st.binary(max_size=400) | JSONISH.map(lambda v: json.dumps(v).encode()), st.sampled_from(["m.json", "m.yaml"]))
def test_metric_reader_on_random_content(data: bytes, name: str) -> None:
    try:
        parse_metric(data, name, "in the workspace")
    except MetricsError as exc:
        assert str(exc).startswith(name) and "\n" not in str(exc)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(["p.csv", "p.tsv", "p.json"]))
def test_plot_reader_on_random_content(data: bytes, name: str) -> None:
    try:
        parse_table(name, data)
    except PlotDataError as exc:
        assert "\n" not in str(exc)


# -- the real CLI ---------------------------------------------------------------------------------


@pytest.fixture
def with_params(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Project:
    """A project with a params model and a params.yaml override, run once."""
    return cloned("params", _build_with_params, tmp_path_factory, tmp_path / "proj")


def loads_or_refuses(project: Project, shown: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The command either succeeds or fails with one `error:` line naming `shown`, exit 1, and
    leaves every file as it was."""
    before = snapshot(project.root)
    proc = project.pivot(*args, check=None)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    if proc.returncode != 0:
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and shown in lines[0], proc.stderr
        assert_same_tree(before, snapshot(project.root))
    return proc


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("target", ["params.yaml", ".pivot/config.yaml", ".pivot/config.local.yaml"])
def test_cli_on_hostile_settings_files(with_params: Project, target: str, name: str) -> None:
    (with_params.root / target).write_bytes(HOSTILE[name])
    proc = loads_or_refuses(with_params, os.path.basename(target), "status")
    if name not in ("a float beyond range",):  # every other case is refused
        assert proc.returncode == 1, f"{target} with {name} was accepted:\n{proc.stdout}"


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_cli_on_a_hostile_lock_file(with_params: Project, name: str) -> None:
    (with_params.root / ".pivot/stages/train.lock").write_bytes(HOSTILE[name])
    proc = loads_or_refuses(with_params, "train.lock", "status")
    assert "train.lock" in proc.stdout + proc.stderr


def test_random_bytes_in_params_through_the_cli(with_params: Project) -> None:
    """A few random files through the real CLI (each example is a process, so the budget is small)."""

    @settings(max_examples=12, derandomize=True, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.binary(min_size=1, max_size=200))
    def check(data: bytes) -> None:
        (with_params.root / "params.yaml").write_bytes(data)
        loads_or_refuses(with_params, "params.yaml", "status")

    check()


def test_pivot_error_is_the_only_way_readers_fail() -> None:
    """The contract above is about PivotError: every reader error type used here is one."""
    for cls in (YamlError, LockError, MetricsError):
        assert issubclass(cls, PivotError)


# -- the pipeline module itself -------------------------------------------------------------------

# Bytes no Python compiler accepts, each with the line Python knows (None: the file as a whole).
HOSTILE_PIPELINE: dict[str, tuple[bytes, int | None]] = {
    "invalid UTF-8": (b"from pivot import stage\nx = '\xff\xfe'\n", 2),
    "NUL bytes": (b"from pivot import stage\n\nx = 1\x00\n", 3),
    "UTF-16 with BOM": ("from pivot import stage\n".encode("utf-16"), 1),
    "UTF-16 without BOM": ("from pivot import stage\n".encode("utf-16-le"), 1),
    "10,000-deep nested brackets": (b"x = " + b"[" * 10_000 + b"]" * 10_000 + b"\n", 1),
    "an enormous integer literal": (b"from pivot import stage\n\nx = " + b"9" * 100_000 + b"\n", 3),
    "a lone surrogate escape": (b"x = 1\ny = '\\ud800'.encode()\n", 2),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_PIPELINE))
def test_cli_on_a_hostile_pipeline_module(with_params: Project, name: str) -> None:
    content, line = HOSTILE_PIPELINE[name]
    (with_params.root / "pipeline.py").write_bytes(content)
    where = "pipeline.py" if line is None else f"pipeline.py:{line}"
    proc = loads_or_refuses(with_params, where, "status")
    assert proc.returncode == 1, f"pipeline.py with {name} was accepted:\n{proc.stdout}"


def test_cli_on_a_hostile_module_the_pipeline_imports(with_params: Project) -> None:
    """The error names the module with the bad bytes, not the pipeline that imports it."""
    (with_params.root / "helpers.py").write_bytes(b"x = 1\ny = 2\x00\n")
    text = (with_params.root / "pipeline.py").read_text()
    (with_params.root / "pipeline.py").write_text("import helpers  # noqa\n" + text)
    proc = loads_or_refuses(with_params, "helpers.py:2", "status")
    assert proc.returncode == 1


# -- the configuration: the loader and the comment-keeping writer ---------------------------------


@FUZZ
@given(st.binary(max_size=300) | JSONISH.map(lambda v: yamlio.dumps(v).encode()))
def test_config_loader_on_random_content(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    from pivot.config import load_config

    root = tmp_path_factory.mktemp("cfg")
    (root / ".pivot").mkdir()
    (root / ".pivot" / "config.yaml").write_bytes(data)
    try:
        load_config(root)
    except PivotError as exc:
        assert "config.yaml" in str(exc) and "\n" not in str(exc), exc


@FUZZ
@given(st.dictionaries(st.text(min_size=1, max_size=8), JSONISH, max_size=4))
def test_config_writer_round_trips_what_the_loader_accepts(tmp_path_factory: pytest.TempPathFactory,
                                                           value: dict[str, Any]) -> None:
    """Opening a file for editing and saving it unchanged never rewrites it, whatever it holds."""
    from pivot.config import ConfigFile

    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    text = "# the team's settings\n" + yamlio.dumps(value)
    path.write_text(text)
    edit = ConfigFile(path)
    assert edit.save() is False
    assert path.read_text() == text
