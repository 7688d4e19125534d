"""Sweeps: `@stage(matrix=...)` becomes one stage per combination, each with its own name,
outputs, lock and params; bad grids are one clear error before anything runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import Project
from hypothesis import given, settings
from hypothesis import strategies as st
from test_errors import cloned, refused, run_events, stages_with

from pivot.layout import stage_file, stage_of_file

PIPELINE = '''
import json
import os

from pydantic import BaseModel

from pivot import Metric, Plot, expand, stage


class TrainParams(BaseModel):
    model: str = "linear"
    seed: int = 0
    lr: float = 0.1


GRID = {"model": ["linear", "tree"], "seed": [0, 1]}


@stage(deps=["data.txt"],
       outs=["models/{model}-{seed}.txt", Metric("metrics/{model}-{seed}.json"),
             Plot("curves/{model}-{seed}.csv", x="step", y="loss")],
       params=TrainParams, matrix=GRID)
def train(params: TrainParams):
    tag = f"{params.model}-{params.seed}"
    for folder in ("models", "metrics", "curves"):
        os.makedirs(folder, exist_ok=True)
    open(f"models/{tag}.txt", "w").write(params.model_dump_json())
    score = params.seed * 10 + len(params.model) + params.lr
    json.dump({"score": round(score, 4), "model": params.model}, open(f"metrics/{tag}.json", "w"))
    open(f"curves/{tag}.csv", "w").write(f"step,loss\\n0,1\\n1,{params.lr}\\n")


@stage(deps=expand("metrics/{model}-{seed}.json", GRID), outs=[Metric("summary.json")])
def compare():
    scores = {p: json.load(open(p))["score"] for p in expand("metrics/{model}-{seed}.json", GRID)}
    json.dump({"best": max(scores.values())}, open("summary.json", "w"))


@stage(deps=["models/tree-1.txt"], outs=["deploy.txt"])
def deploy():
    open("deploy.txt", "w").write(open("models/tree-1.txt").read())
'''

VARIANTS = ["train@model=linear,seed=0", "train@model=linear,seed=1", "train@model=tree,seed=0",
            "train@model=tree,seed=1"]


def _build(p: Project) -> None:
    p.write("data.txt", "data\n")
    p.pipeline(PIPELINE)


def _build_ran(p: Project) -> None:
    _build(p)
    p.pivot("run")
    p.git("add", "-A")
    p.git("commit", "-qm", "sweep")


@pytest.fixture
def sweep(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Project:
    """The sweep pipeline, not run yet."""
    return cloned("sweep", _build, tmp_path_factory, tmp_path / "proj")


@pytest.fixture
def ran(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Project:
    """The sweep pipeline, run once and committed."""
    return cloned("sweep-ran", _build_ran, tmp_path_factory, tmp_path / "proj")


def test_list_shows_one_stage_per_combination_with_its_paths(sweep: Project) -> None:
    rows = {r["stage"]: r for r in json.loads(sweep.pivot("list", "--json").stdout)}
    assert list(rows) == [*VARIANTS, "compare", "deploy"]
    tree1 = rows["train@model=tree,seed=1"]
    assert tree1["sweep"] == "train" and tree1["matrix"] == {"model": "tree", "seed": 1}
    assert [o["path"] for o in tree1["outs"]] == ["models/tree-1.txt", "metrics/tree-1.json", "curves/tree-1.csv"]
    assert tree1["deps"] == ["data.txt"]
    assert rows["compare"]["upstream"] == VARIANTS  # depends on all of them
    assert rows["deploy"]["upstream"] == ["train@model=tree,seed=1"]  # on one
    assert rows["deploy"]["sweep"] is None and rows["deploy"]["matrix"] == {}


def test_each_variant_runs_with_its_values_and_has_its_own_lock(ran: Project) -> None:
    locks = sorted(p.name for p in (ran.root / ".pivot/stages").iterdir())
    assert locks == sorted([*(f"{v}.lock" for v in VARIANTS), "compare.lock", "deploy.lock"])
    assert json.loads(ran.read("models/tree-1.txt")) == {"model": "tree", "seed": 1, "lr": 0.1}
    assert "model: tree" in ran.lock("train@model=tree,seed=1") and "seed: 1" in ran.lock("train@model=tree,seed=1")
    assert json.loads(ran.read("summary.json")) == {"best": 16.1}
    assert ran.pivot("status").stdout.strip() == "all 6 stage(s) up to date"


def test_a_change_to_one_variants_params_reruns_only_it(ran: Project) -> None:
    ran.write("params.yaml", "train@model=tree,seed=1:\n  lr: 0.5\n")
    status = ran.pivot("status").stdout
    assert "train@model=tree,seed=1: stale (param lr: 0.1 -> 0.5)" in status
    assert "3 of 6 stage(s) stale" in status  # it, and what depends on it
    events, _ = run_events(ran)
    assert stages_with(events, "running") == ["train@model=tree,seed=1", "compare", "deploy"]
    # The sweep's own section is every variant's; a variant's section wins over it.
    ran.write("params.yaml", "train:\n  lr: 0.2\ntrain@model=tree,seed=1:\n  lr: 0.5\n")
    events, _ = run_events(ran)
    assert stages_with(events, "running") == [*VARIANTS[:3], "compare"]
    assert json.loads(ran.read("models/linear-0.txt"))["lr"] == 0.2
    assert json.loads(ran.read("models/tree-1.txt"))["lr"] == 0.5
    # -S addresses the sweep (every variant) or one variant by its full name.
    events, _ = run_events(ran, "-S", "train@model=linear,seed=0.lr=0.3")
    assert stages_with(events, "running") == ["train@model=linear,seed=0", "compare"]
    assert ran.read("params.yaml") == "train:\n  lr: 0.2\ntrain@model=tree,seed=1:\n  lr: 0.5\n" \
                                      "train@model=linear,seed=0:\n  lr: 0.3\n"


def test_run_a_variant_by_name_or_the_whole_sweep_by_its_name(sweep: Project) -> None:
    events, _ = run_events(sweep, "train@model=tree,seed=1")
    assert stages_with(events, "running") == ["train@model=tree,seed=1"]
    status = sweep.pivot("status", "train").stdout
    assert [line.split(":")[0] for line in status.splitlines()[:-1]] == VARIANTS[:3]
    events, _ = run_events(sweep, "train")
    assert stages_with(events, "running") == VARIANTS[:3]
    assert not sweep.exists("summary.json")  # downstream of the sweep: not selected


def test_metrics_show_all_stages_one_row_per_variant(ran: Project) -> None:
    text = ran.pivot("metrics", "show", "--all-stages", "--sort", "score", "--desc").stdout
    assert text.splitlines()[:2] == ["stage                      model   seed  best  model (metric)  score",
                                     "train@model=linear,seed=1  linear  1     -     linear          16.1"]
    rows = [line.split()[0] for line in text.splitlines()[1:]]
    assert rows == ["train@model=linear,seed=1", "train@model=tree,seed=1", "train@model=linear,seed=0",
                    "train@model=tree,seed=0", "compare"]  # 16.1, 14.1, 6.1, 4.1, then no score
    data = json.loads(ran.pivot("metrics", "show", "--all-stages", "--stage", "train", "--json").stdout)
    assert data["keys"] == ["model", "seed"] and data["columns"] == ["model (metric)", "score"]
    assert data["rows"][3] == {"stage": "train@model=tree,seed=1", "matrix": {"model": "tree", "seed": 1},
                               "values": {"model (metric)": "tree", "score": 14.1}}
    md = ran.pivot("metrics", "show", "HEAD", "--all-stages", "--stage", "train", "--sort", "seed", "--md").stdout
    assert md.splitlines()[2:5] == ["| stage | model | seed | model (metric) | score |", "|---|---|---|---|---|",
                                    "| train@model=linear,seed=0 | linear | 0 | linear | 6.1 |"]
    refused(ran, "metrics", "show", "--all-stages", "--sort", "acc", names=("'acc'", "score"))
    refused(ran, "metrics", "show", "--all-stages", "--stage", "trian", names=("unknown stage 'trian'",))


def test_plots_and_params_show_every_variant(ran: Project) -> None:
    plots = json.loads(ran.pivot("plots", "show", "--json").stdout)
    assert sorted(p["path"] for p in plots["plots"]) == [f"curves/{v}.csv" for v in
                                                         ("linear-0", "linear-1", "tree-0", "tree-1")]
    params = json.loads(ran.pivot("params", "show", "--json").stdout)
    assert {(v["stage"], v["key"], v["value"]) for v in params["values"] if v["key"] == "seed"} == \
        {(v, "seed", int(v[-1])) for v in VARIANTS}


def test_a_value_unsafe_in_a_file_name_is_encoded_in_the_lock_name(project: Project) -> None:
    project.pipeline('''
from pydantic import BaseModel
from pivot import stage

class P(BaseModel):
    where: str = ""
    on: bool = False

@stage(outs=["out/{where}/{on}.txt"], params=P, matrix={"where": ["a/b", "50%"], "on": [True]})
def make(params: P):
    print("making", params.where)
    import os
    os.makedirs(f"out/{params.where}", exist_ok=True)
    open(f"out/{params.where}/true.txt", "w").write(params.where)
''')
    events, _ = run_events(project)
    assert stages_with(events, "running") == ["make@where=a/b,on=true", "make@where=50%,on=true"]
    assert sorted(p.name for p in (project.root / ".pivot/stages").iterdir()) == \
        ["make@where=50%25,on=true.lock", "make@where=a%2Fb,on=true.lock"]
    assert project.read("out/a/b/true.txt") == "a/b"
    assert project.pivot("status").stdout.strip() == "all 2 stage(s) up to date"
    assert "making a/b" in project.pivot("logs", "make@where=a/b,on=true").stdout
    project.git("add", "-A")
    project.git("commit", "-qm", "encoded")
    data = json.loads(project.pivot("params", "show", "HEAD", "--json").stdout)
    assert {v["stage"] for v in data["values"]} == {"make@where=a/b,on=true", "make@where=50%,on=true"}


MODEL = '''
from pydantic import BaseModel
from pivot import stage

class P(BaseModel):
    model: str = "a"
    seed: int = 0

'''


@pytest.mark.parametrize(("decorator", "names"), [
    ('@stage(outs=["{model}.txt"], params=P, matrix={"model": []})', ("'model'", "empty list", "no variants")),
    ('@stage(outs=["x.txt"], params=P, matrix={})', ("matrix= is empty", "no variants")),
    ('@stage(outs=["{model}.txt"], params=P, matrix={"model": [object()]})', ("not a YAML/JSON value", "object")),
    ('@stage(outs=["{model}.txt"], params=P, matrix={"model": ["a", float("nan")]})', ("nan",)),
    ('@stage(outs=["{model}.txt"], params=P, matrix={"model": "ab"})', ("must map to a list",)),
    ('@stage(outs=["out/{model}.txt"], params=P, matrix={"model": ["a", "b"], "seed": [0, 1]})',
     ("'out/{model}.txt'", "'out/a.txt'", "train@model=a,seed=0", "train@model=a,seed=1", "{seed}")),
    ('@stage(outs=["{model}.txt", "same.txt"], params=P, matrix={"model": ["a", "b"]})', ("'same.txt'", "{model}")),
    ('@stage(outs=["{modle}.txt"], params=P, matrix={"model": ["a"]})', ("'{modle}'", "not a matrix key", "{model}")),
    ('@stage(outs=["{model!r}.txt"], params=P, matrix={"model": ["a"]})', ("'{model!r}'",)),
    ('@stage(outs=["{model}.txt"], params=P, matrix={"modle": ["a"]})', ("'modle'", "not a field of P", "model, seed")),
    ('@stage(outs=["{model}.txt"], matrix={"model": ["a"]})', ("no params= model",)),
    ('@stage(outs=["{model}.txt"], params=P, matrix={"model": ["1", 1]})',
     ("'1'", "both written '1'", "give each value once")),
    ('@stage(outs=["{model}.txt"], params=P, matrix={"model": ["a", "a"]})', ("appears twice",)),
])
def test_bad_sweep_is_one_error_before_anything_runs(project: Project, decorator: str, names: tuple[str, ...]) -> None:
    project.pipeline(MODEL + decorator + "\ndef train(params=None):\n    open('ran', 'w')\n")
    line = refused(project, "run", names=("stage 'train'", *names))
    assert "pipeline.py" in line
    assert not project.exists("ran") and not list((project.root / ".pivot/stages").glob("*.lock"))


def test_sweep_name_clashing_with_a_stage_is_refused(project: Project) -> None:
    project.pipeline(MODEL + '''
@stage(outs=["{model}.txt"], params=P, matrix={"model": ["a", "b"]})
def train(params):
    pass

@stage(outs=["other.txt"], name="train")
def other():
    pass
''')
    refused(project, "list", names=("two stages are named 'train'",))


def test_matrix_value_the_model_refuses_or_a_swept_field_in_params_yaml(project: Project) -> None:
    project.pipeline(MODEL + '''
@stage(outs=["{seed}.txt"], params=P, matrix={"seed": [1, "many"]})
def train(params):
    open(f"{params.seed}.txt", "w")
''')
    refused(project, "run", names=("the matrix of sweep 'train'", "stage 'train@seed=many'", "field 'seed'",
                                   "valid integer"))
    project.pipeline(MODEL + '''
@stage(outs=["{seed}.txt"], params=P, matrix={"seed": [1, 2]})
def train(params):
    open(f"{params.seed}.txt", "w")
''')
    project.write("params.yaml", "train:\n  seed: 3\n")
    refused(project, "run", names=("params.yaml", "field 'seed'", "matrix of sweep 'train' sets it"))
    project.write("params.yaml", "train:\n  model: b\n")
    refused(project, "run", "-S", "train.seed=4", names=("-S train.seed=4", "matrix of sweep 'train' sets 'seed'"))


def test_push_takes_a_variant_or_the_sweep_name(ran: Project, tmp_path: Path) -> None:
    ran.pivot("remote", "add", "store", str(tmp_path / "store"), "--default")
    one = json.loads(ran.pivot("push", "train@model=tree,seed=1", "--json").stdout)
    assert one["objects"] == 2  # its model and its curve
    every = json.loads(ran.pivot("push", "train", "--json").stdout)
    assert every["objects"] + every["already_present"] == 5  # four models; the four curves are one object
    refused(ran, "push", "trian", names=("stage 'trian' has no lock file",))


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,20}", fullmatch=True), st.text(max_size=30))
def test_stage_file_names_are_safe_and_read_back(base: str, value: str) -> None:
    name = f"{base}@key={value}"
    file = stage_file(name, ".lock")
    assert stage_of_file(file, ".lock") == name
    assert re.fullmatch(r"[A-Za-z0-9_.\-@=,+%]+\.lock", file)  # nothing a file system or a shell minds
    assert stage_file(base, ".lock") == base + ".lock"  # an ordinary name is its own file name


def test_a_list_value_in_an_output_path_is_git_ignored_literally(project: Project) -> None:
    project.pipeline('''
import json
from pydantic import BaseModel
from pivot import stage

class P(BaseModel):
    layers: list[int] = []

@stage(outs=["nets/{layers}.txt"], params=P, matrix={"layers": [[64, 32], [8]]})
def net(params: P):
    import os
    os.makedirs("nets", exist_ok=True)
    open(f"nets/{json.dumps(params.layers, separators=(',', ':'))}.txt", "w").write("x")
''')
    project.pivot("run")
    assert sorted(p.name for p in (project.root / "nets").iterdir()) == ["[64,32].txt", "[8].txt"]
    assert "nets/" not in project.git("status", "--porcelain", "--untracked-files=all")  # cached: ignored
    assert "/nets/\\[64,32].txt" in project.read(".gitignore")
