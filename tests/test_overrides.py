"""`pivot run -S STAGE.FIELD=VALUE`: checked by the params model, written into params.yaml with
its comments kept, then the run proceeds; a bad setting changes nothing and runs nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Project
from test_errors import cloned, refused, run_events, stages_with

PIPELINE = '''
from pydantic import BaseModel, PositiveInt

from pivot import stage


class Optim(BaseModel):
    momentum: float = 0.9


class TrainParams(BaseModel):
    epochs: PositiveInt = 10
    lr: float = 0.1
    name: str = "base"
    optim: Optim = Optim()


@stage(outs=["model.json"], params=TrainParams)
def train(params: TrainParams):
    open("model.json", "w").write(params.model_dump_json())


@stage(deps=["model.json"], outs=["report.txt"])
def report():
    open("report.txt", "w").write(open("model.json").read().upper())
'''

PARAMS = """\
# Parameters of the pipeline: edit, or use 'pivot run -S'.
train:
  epochs: 20   # enough for the small data set
  lr: 0.5      # learning rate
  name: 'quoted'
"""


def _build(p: Project) -> None:
    p.pipeline(PIPELINE)
    p.write("params.yaml", PARAMS)
    p.pivot("run")
    p.git("add", "-A")
    p.git("commit", "-qm", "first run")


@pytest.fixture
def ran(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Project:
    """Run once with PARAMS and committed."""
    return cloned("overrides", _build, tmp_path_factory, tmp_path / "proj")


def test_set_writes_params_yaml_with_its_comments_then_runs(ran: Project) -> None:
    events, _ = run_events(ran, "-S", "train.epochs=50", "-S", "train.lr=0.01")
    assert ran.read("params.yaml") == PARAMS.replace("epochs: 20 ", "epochs: 50 ").replace("lr: 0.5 ", "lr: 0.01")
    assert stages_with(events, "running") == ["train", "report"]
    notes = [e["text"] for e in events if e["event"] == "note"]
    assert notes == ["params.yaml: set train.epochs = 50, train.lr = 0.01"]
    assert json.loads(ran.read("model.json"))["epochs"] == 50
    assert "epochs: 50" in ran.lock("train") and "lr: 0.01" in ran.lock("train")
    diff = json.loads(ran.pivot("params", "diff", "--json").stdout)
    assert {(c["key"], c["old"], c["new"]) for c in diff["changes"]} == {("epochs", 20, 50), ("lr", 0.5, 0.01)}
    assert diff["notes"] == []  # the lock records exactly what params.yaml says
    ran.pivot("verify")
    before = (ran.root / "params.yaml").stat().st_mtime_ns
    events, _ = run_events(ran, "-S", "train.epochs=50")  # already so: the file is not rewritten
    assert stages_with(events, "running") == []
    assert (ran.root / "params.yaml").stat().st_mtime_ns == before


def test_nested_field_and_a_new_section(ran: Project) -> None:
    (ran.root / "params.yaml").unlink()
    ran.pivot("run", "-S", "train.optim.momentum=0.5", "-S", "train.name=yes please")
    assert ran.read("params.yaml") == "train:\n  optim:\n    momentum: 0.5\n  name: yes please\n"
    model = json.loads(ran.read("model.json"))
    assert model["optim"] == {"momentum": 0.5} and model["name"] == "yes please" and model["epochs"] == 10


def test_dry_run_plans_with_the_values_and_writes_nothing(ran: Project) -> None:
    before = ran.read("params.yaml")
    events, _ = run_events(ran, "--dry-run", "-S", "train.lr=0.25")
    assert ran.read("params.yaml") == before
    would = [e for e in events if e["event"] == "would_run"]
    assert [e["stage"] for e in would] == ["train", "report"]
    assert would[0]["reasons"] == ["param lr: 0.5 -> 0.25"]


@pytest.mark.parametrize(("setting", "names"), [
    ("train.epochs=-3", ("-S train.epochs=-3", "stage 'train'", "field 'epochs'", "greater than 0")),
    ("train.epochs=many", ("stage 'train'", "field 'epochs'", "valid integer")),
    ("train.optim.momentum=[1]", ("stage 'train'", "field 'optim.momentum'", "valid number")),
    ("trian.lr=1", ("no stage named 'trian'", "train")),
    ("train.rate=1", ("unknown field 'rate'", "TrainParams", "epochs, lr, name, optim")),
    ("train.optim.beta=1", ("unknown field 'beta'", "Optim", "momentum")),
    ("train.lr.x=1", ("'lr' is not a nested model",)),
    ("report.x=1", ("stage 'report' takes no params",)),
    ("train.lr", ("expected a field name and '='",)),
    ("train.lr=[1", ("not valid YAML",)),
])
def test_bad_setting_is_one_error_and_changes_nothing(ran: Project, setting: str, names: tuple[str, ...]) -> None:
    before = (ran.root / "params.yaml").read_bytes()
    refused(ran, "run", "-S", "train.lr=0.3", "-S", setting, names=names)
    assert (ran.root / "params.yaml").read_bytes() == before  # byte for byte; and nothing ran (refused)
