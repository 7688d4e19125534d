"""`pivot metrics show/diff` and `pivot params show/diff`: values read from the workspace and from
git objects at real commits."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, make_git_repo
from test_errors import cloned

from pivot.metrics import ABSENT, Change, diff, flatten

# `train` copies scores.json into its metric, adding the model name from its params; `evaluate`
# (added in the second commit) copies eval_source.yaml into a YAML metric. So each test decides
# the metric values exactly.
PIPELINE = '''
import json, os, shutil
from pydantic import BaseModel
from pivot import Metric, stage


class TrainParams(BaseModel):
    lr: float = 0.1
    epochs: int = 10
    model: str = "linear"


@stage(deps=["scores.json"], outs=["model.txt", Metric("metrics.json")], params=TrainParams)
def train(params: TrainParams):
    open("model.txt", "w").write(params.model)
    scores = json.load(open("scores.json"))
    json.dump({**scores, "model": params.model}, open("metrics.json", "w"))
'''

EVALUATE = '''

@stage(deps=["eval_source.yaml"], outs=[Metric("eval/summary.yaml")])
def evaluate():
    os.makedirs("eval", exist_ok=True)
    shutil.copy("eval_source.yaml", "eval/summary.yaml")
'''

EVAL_SOURCE = "f1: 0.7\nper_class: [0.6, 0.8]\npassed: true\nthresholds:\n  low: 0.2\n"


def commit_all(project: Project, message: str) -> str:
    project.git("add", "-A")
    project.git("commit", "-q", "-m", message)
    return project.git("rev-parse", "HEAD").strip()


def scores(accuracy: float, train: float, test: float) -> str:
    return json.dumps({"accuracy": accuracy, "loss": {"train": train, "test": test}})


def out_json(project: Project, *args: str) -> Any:
    return json.loads(project.pivot(*args, "--json").stdout)


def by_key(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{r.get('path') or r.get('stage')}:{r['key']}": r for r in rows}


def _build_two_commits(project: Project) -> None:
    project.pipeline(PIPELINE)
    project.write("scores.json", scores(0.8, 0.5, 0.6))
    project.pivot("run")
    commit_all(project, "c1")
    project.pipeline(PIPELINE + EVALUATE)
    project.write("eval_source.yaml", EVAL_SOURCE)
    project.write("params.yaml", "train:\n  lr: 0.2\n  model: tree\n")
    project.write("scores.json", scores(0.85, 0.4, 0.6))
    project.pivot("run")
    commit_all(project, "c2")


@pytest.fixture
def two_commits(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> tuple[Project, str, str]:
    """c1: train only, default params. c2: params.yaml changes lr and model, new scores, and a new
    stage `evaluate` with a YAML metric. Both run and committed; the workspace matches c2. Built
    once per session and copied for each test (test_errors.cloned)."""
    project = cloned("two_commits", _build_two_commits, tmp_path_factory, tmp_path / "proj")
    c2 = project.git("rev-parse", "HEAD").strip()
    c1 = project.git("rev-parse", "HEAD~1").strip()
    assert project.git("log", "--format=%s", "-2").split() == ["c2", "c1"]
    return project, c1, c2


# -- show ------------------------------------------------------------------------------------


def test_metrics_show_flattens_json_and_yaml_metrics(two_commits: tuple[Project, str, str]) -> None:
    project, _, _c2 = two_commits
    data = out_json(project, "metrics", "show")
    assert data["rev"] == "workspace" and data["commit"] is None and data["notes"] == []
    assert data["values"] == [
        {"path": "eval/summary.yaml", "key": "f1", "value": 0.7},
        {"path": "eval/summary.yaml", "key": "passed", "value": True},
        {"path": "eval/summary.yaml", "key": "per_class", "value": [0.6, 0.8]},
        {"path": "eval/summary.yaml", "key": "thresholds.low", "value": 0.2},
        {"path": "metrics.json", "key": "accuracy", "value": 0.85},
        {"path": "metrics.json", "key": "loss.test", "value": 0.6},
        {"path": "metrics.json", "key": "loss.train", "value": 0.4},
        {"path": "metrics.json", "key": "model", "value": "tree"},
    ]
    assert project.pivot("metrics", "show").stdout == (
        "path               key             value\n"
        "eval/summary.yaml  f1              0.7\n"
        "eval/summary.yaml  passed          true\n"
        "eval/summary.yaml  per_class       [0.6, 0.8]\n"
        "eval/summary.yaml  thresholds.low  0.2\n"
        "metrics.json       accuracy        0.85\n"
        "metrics.json       loss.test       0.6\n"
        "metrics.json       loss.train      0.4\n"
        "metrics.json       model           tree\n"
    )


def test_metrics_show_at_a_revision_reads_that_commit(two_commits: tuple[Project, str, str]) -> None:
    project, c1, _ = two_commits
    data = out_json(project, "metrics", "show", c1)
    assert data["commit"] == c1
    assert [(r["key"], r["value"]) for r in data["values"]] == [
        ("accuracy", 0.8), ("loss.test", 0.6), ("loss.train", 0.5), ("model", "linear")]


def test_metrics_show_markdown(two_commits: tuple[Project, str, str]) -> None:
    project, c1, _ = two_commits
    out = project.pivot("metrics", "show", c1, "--md").stdout
    assert out == (
        f"at {c1} ({c1[:10]})\n"
        "\n"
        "| path | key | value |\n"
        "|---|---|---|\n"
        "| metrics.json | accuracy | 0.8 |\n"
        "| metrics.json | loss.test | 0.6 |\n"
        "| metrics.json | loss.train | 0.5 |\n"
        "| metrics.json | model | linear |\n"
    )


def test_a_new_uncommitted_metric_shows_in_the_workspace(two_commits: tuple[Project, str, str]) -> None:
    project, _, _ = two_commits
    project.pipeline(PIPELINE + EVALUATE + '''

@stage(deps=["eval/summary.yaml"], outs=[Metric("extra.yaml")])
def extra():
    open("extra.yaml", "w").write("n: 3\\n")
''')
    project.pivot("run")
    changes = out_json(project, "metrics", "diff")["changes"]
    assert changes == [{"path": "extra.yaml", "key": "n", "status": "added", "old": None, "new": 3,
                        "change": None, "percent": None}]


# -- diff ----------------------------------------------------------------------------------


def test_diff_head_against_the_workspace(two_commits: tuple[Project, str, str]) -> None:
    project, _, c2 = two_commits
    assert out_json(project, "metrics", "diff")["changes"] == []
    assert project.pivot("metrics", "diff").stdout == f"HEAD ({c2[:10]}) -> workspace\nno changes\n"
    project.write("scores.json", scores(0.9, 0.4, 0.6))
    project.write("eval_source.yaml", EVAL_SOURCE.replace("passed: true", "passed: false"))
    project.pivot("run")
    data = out_json(project, "metrics", "diff")
    assert data["old"] == {"rev": "HEAD", "commit": c2} and data["new"] == {"rev": "workspace", "commit": None}
    assert data["changes"] == [
        {"path": "eval/summary.yaml", "key": "passed", "status": "modified", "old": True, "new": False,
         "change": None, "percent": None},
        {"path": "metrics.json", "key": "accuracy", "status": "modified", "old": 0.85, "new": 0.9,
         "change": 0.05, "percent": 5.88},
    ]


def test_diff_between_two_commits_where_a_metric_did_not_exist_yet(
        two_commits: tuple[Project, str, str]) -> None:
    project, c1, c2 = two_commits
    before = project.git("status", "--porcelain")
    data = out_json(project, "metrics", "diff", c1, c2)
    assert data["old"]["commit"] == c1 and data["new"]["commit"] == c2
    rows = by_key(data["changes"])
    assert list(rows) == ["eval/summary.yaml:f1", "eval/summary.yaml:passed", "eval/summary.yaml:per_class",
                          "eval/summary.yaml:thresholds.low", "metrics.json:accuracy", "metrics.json:loss.train",
                          "metrics.json:model"]
    assert rows["eval/summary.yaml:f1"] == {"path": "eval/summary.yaml", "key": "f1", "status": "added",
                                            "old": None, "new": 0.7, "change": None, "percent": None}
    assert rows["eval/summary.yaml:per_class"]["new"] == [0.6, 0.8]
    assert (rows["metrics.json:accuracy"]["change"], rows["metrics.json:accuracy"]["percent"]) == (0.05, 6.25)
    assert (rows["metrics.json:loss.train"]["change"], rows["metrics.json:loss.train"]["percent"]) == (-0.1, -20.0)
    assert rows["metrics.json:model"] == {"path": "metrics.json", "key": "model", "status": "modified",
                                          "old": "linear", "new": "tree", "change": None, "percent": None}
    assert project.git("status", "--porcelain") == before  # nothing checked out

    # the other way round, by branch and relative names
    project.git("branch", "first", c1)
    back = by_key(out_json(project, "metrics", "diff", "HEAD", "first")["changes"])
    assert back["eval/summary.yaml:f1"]["status"] == "removed" and back["eval/summary.yaml:f1"]["old"] == 0.7
    assert back["metrics.json:accuracy"]["change"] == -0.05


def test_diff_table_and_markdown(two_commits: tuple[Project, str, str]) -> None:
    project, c1, c2 = two_commits
    out = project.pivot("metrics", "diff", "HEAD~1", "HEAD").stdout
    assert out == (
        f"HEAD~1 ({c1[:10]}) -> HEAD ({c2[:10]})\n"
        "path               key             old     new         change   %\n"
        "eval/summary.yaml  f1              -       0.7         added\n"
        "eval/summary.yaml  passed          -       true        added\n"
        "eval/summary.yaml  per_class       -       [0.6, 0.8]  added\n"
        "eval/summary.yaml  thresholds.low  -       0.2         added\n"
        "metrics.json       accuracy        0.8     0.85        +0.05    +6.25%\n"
        "metrics.json       loss.train      0.5     0.4         -0.1     -20.00%\n"
        "metrics.json       model           linear  tree        changed\n"
    )
    md = project.pivot("metrics", "diff", "HEAD~1", "HEAD", "--md").stdout
    assert md.splitlines()[1:5] == [
        "",
        "| path | key | old | new | change | % |",
        "|---|---|---|---|---|---|",
        "| eval/summary.yaml | f1 | - | 0.7 | added |  |",
    ]
    assert "| metrics.json | accuracy | 0.8 | 0.85 | +0.05 | +6.25% |" in md.splitlines()


def test_diff_all_includes_unchanged_values(two_commits: tuple[Project, str, str]) -> None:
    project, c1, c2 = two_commits
    rows = by_key(out_json(project, "metrics", "diff", c1, c2, "--all")["changes"])
    assert len(rows) == 8
    assert rows["metrics.json:loss.test"] == {"path": "metrics.json", "key": "loss.test", "status": "unchanged",
                                              "old": 0.6, "new": 0.6, "change": 0.0, "percent": 0.0}
    table = project.pivot("metrics", "diff", c1, c2, "--all").stdout
    assert "metrics.json       loss.test       0.6     0.6\n" in table
    assert "loss.test" not in project.pivot("metrics", "diff", c1, c2).stdout


def test_a_metric_missing_from_the_workspace_is_noted(two_commits: tuple[Project, str, str]) -> None:
    project, _, _ = two_commits
    (project.root / "eval" / "summary.yaml").unlink()
    proc = project.pivot("metrics", "diff")
    assert "note: eval/summary.yaml (stage evaluate) is not in the workspace; run 'pivot run evaluate'" in proc.stderr
    assert "eval/summary.yaml f1 0.7 - removed" in [" ".join(line.split()) for line in proc.stdout.splitlines()]
    data = out_json(project, "metrics", "show")
    assert data["notes"] == ["eval/summary.yaml (stage evaluate) is not in the workspace; run 'pivot run evaluate'"]
    assert {r["path"] for r in data["values"]} == {"metrics.json"}


def test_project_in_a_subfolder_from_a_nested_folder(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_git_repo(repo)
    (repo / "ml").mkdir()
    project = Project(repo / "ml")
    project.pivot("init")
    project.pipeline(PIPELINE)
    project.write("scores.json", scores(0.5, 0.5, 0.5))
    project.pivot("run")
    commit_all(project, "one")
    project.write("scores.json", scores(0.75, 0.5, 0.5))
    project.pivot("run")
    (project.root / "sub").mkdir()
    proc = project.pivot("metrics", "diff", "--json", cwd=project.root / "sub")
    assert json.loads(proc.stdout)["changes"] == [
        {"path": "metrics.json", "key": "accuracy", "status": "modified", "old": 0.5, "new": 0.75,
         "change": 0.25, "percent": 50.0}]


# -- params ------------------------------------------------------------------------------------


def test_params_show_and_diff_across_commits(two_commits: tuple[Project, str, str]) -> None:
    project, c1, c2 = two_commits
    data = out_json(project, "params", "show")
    assert data["values"] == [
        {"stage": "train", "key": "epochs", "value": 10},
        {"stage": "train", "key": "lr", "value": 0.2},
        {"stage": "train", "key": "model", "value": "tree"},
    ]
    assert project.pivot("params", "show").stdout == (
        "stage  key     value\n"
        "train  epochs  10\n"
        "train  lr      0.2\n"
        "train  model   tree\n"
    )
    assert out_json(project, "params", "show", c1)["values"][1] == {"stage": "train", "key": "lr", "value": 0.1}
    changes = out_json(project, "params", "diff", c1, c2)["changes"]
    assert changes == [
        {"stage": "train", "key": "lr", "status": "modified", "old": 0.1, "new": 0.2, "change": 0.1, "percent": 100.0},
        {"stage": "train", "key": "model", "status": "modified", "old": "linear", "new": "tree",
         "change": None, "percent": None},
    ]
    assert project.pivot("params", "diff", c1).stdout == (
        f"{c1} ({c1[:10]}) -> workspace\n"
        "stage  key    old     new   change   %\n"
        "train  lr     0.1     0.2   +0.1     +100.00%\n"
        "train  model  linear  tree  changed\n"
    )


def test_params_diff_shows_recorded_values_and_notes_a_stale_stage(two_commits: tuple[Project, str, str]) -> None:
    project, _, _ = two_commits
    project.write("params.yaml", "train:\n  lr: 0.3\n  model: tree\n")
    proc = project.pivot("params", "diff")
    assert proc.stdout.endswith("no changes\n")  # the locks have not changed yet
    assert proc.stderr == ("note: stage train is stale: its params now differ from its lock (lr: 0.2 -> 0.3); "
                           "the values shown are the recorded ones; run 'pivot run train'\n")
    project.pivot("run")
    changes = out_json(project, "params", "diff")
    assert changes["notes"] == []
    assert changes["changes"] == [{"stage": "train", "key": "lr", "status": "modified", "old": 0.2, "new": 0.3,
                                   "change": 0.1, "percent": 50.0}]


# -- errors ------------------------------------------------------------------------------------


def assert_error(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {message}"]


def test_unknown_revision(two_commits: tuple[Project, str, str]) -> None:
    project, _, _ = two_commits
    hint = "use a branch, tag or commit (see 'git log --oneline')"
    assert_error(project.pivot("metrics", "diff", "nope", check=False), f"unknown git revision 'nope'; {hint}")
    assert_error(project.pivot("params", "diff", "HEAD", "HEAD~7", check=False),
                 f"unknown git revision 'HEAD~7'; {hint}")
    assert_error(project.pivot("metrics", "show", "v9", check=False), f"unknown git revision 'v9'; {hint}")


def test_no_commits_yet(project: Project) -> None:
    project.pipeline(PIPELINE)
    project.write("scores.json", scores(0.8, 0.5, 0.6))
    project.pivot("run")
    assert out_json(project, "metrics", "show")["values"][0] == {"path": "metrics.json", "key": "accuracy",
                                                                 "value": 0.8}
    message = ("unknown git revision 'HEAD': this repository has no commits yet; "
               "commit your work first (git commit), then diff against it")
    assert_error(project.pivot("metrics", "diff", check=False), message)
    assert_error(project.pivot("params", "diff", check=False), message)


def test_malformed_metric_in_the_workspace(two_commits: tuple[Project, str, str]) -> None:
    project, _, _ = two_commits
    suffix = "a Metric must be a JSON or YAML mapping of names to values"
    project.write("metrics.json", '{"accuracy": 0.9,\n')
    assert_error(project.pivot("metrics", "diff", check=False),
                 "metrics.json (stage train) in the workspace: not valid JSON (Expecting property name "
                 f"enclosed in double quotes at line 2, column 1); {suffix}")
    project.write("metrics.json", "[0.9, 0.8]\n")
    assert_error(project.pivot("metrics", "show", check=False),
                 f"metrics.json (stage train) in the workspace: the top level is a list, not a mapping; {suffix}")
    project.write("metrics.json", "{}")
    project.write("eval/summary.yaml", "f1: [0.7\n")
    assert_error(project.pivot("metrics", "show", check=False),
                 "eval/summary.yaml (stage evaluate) in the workspace: not valid YAML (did not find expected "
                 f"',' or ']' at line 2); {suffix}")


def test_malformed_metric_at_a_revision_names_the_revision(two_commits: tuple[Project, str, str]) -> None:
    project, _, _ = two_commits
    project.write("metrics.json", "just text\n")  # committed by hand, without a hook to refuse it
    bad = commit_all(project, "broken metric")
    project.write("metrics.json", '{"accuracy": 1}')
    assert_error(project.pivot("metrics", "diff", check=False),
                 f"metrics.json (stage train) at HEAD ({bad[:10]}): not valid JSON (Expecting value at line 1, "
                 "column 1); a Metric must be a JSON or YAML mapping of names to values")


def test_a_stage_writing_an_unreadable_metric_fails_and_keeps_nothing(two_commits: tuple[Project, str, str]) -> None:
    """Caught when the stage finishes, not at the next `pivot metrics show` (or after a commit):
    the stage fails with the reason, its outputs are put back as they were, no lock is written."""
    project, _, _ = two_commits
    lock_before = project.lock("evaluate")
    summary_before = project.read("eval/summary.yaml")
    suffix = "a Metric must be a JSON or YAML mapping of names to values"
    for source, problem in (("f1: [0.7\n", "not valid YAML (did not find expected ',' or ']' at line 2)"),
                            ("- 0.7\n- 0.8\n", "the top level is a list, not a mapping")):
        project.write("eval_source.yaml", source)
        run = project.pivot("run", check=False)
        assert run.returncode == 1
        assert "Traceback" not in run.stderr
        assert f"eval/summary.yaml as stage 'evaluate' wrote it: {problem}; {suffix}" in run.stderr, run.stderr
        assert project.lock("evaluate") == lock_before
        assert project.read("eval/summary.yaml") == summary_before
    project.write("eval_source.yaml", "f1: 0.9\n")
    project.pivot("run")
    values = out_json(project, "metrics", "show")["values"]
    assert {"path": "eval/summary.yaml", "key": "f1", "value": 0.9} in values
    assert project.lock("evaluate") != lock_before


# -- the pure parts -----------------------------------------------------------------------------


def test_flatten_keeps_lists_and_empty_mappings_as_values() -> None:
    assert flatten({"a": {"b": {"c": 1}, "d": [1, {"x": 2}]}, "e": {}, "f": None}) == \
        {"a.b.c": 1, "a.d": [1, {"x": 2}], "e": {}, "f": None}


@pytest.mark.parametrize(("old", "new", "status", "delta", "percent"), [
    (0.8, 0.85, "modified", 0.05, 6.25),
    (3, 5, "modified", 2, 66.67),
    (-2, -1, "modified", 1, 50.0),
    (0, 4, "modified", 4, None),             # no percent of zero
    (1, 1.0, "unchanged", 0.0, 0.0),
    (True, False, "modified", None, None),  # booleans are not numbers
    (1, True, "modified", None, None),
    ("a", 1, "modified", None, None),
    (None, 0, "modified", None, None),
    (float("nan"), float("nan"), "unchanged", None, None),
    (ABSENT, 1, "added", None, None),
    (1, ABSENT, "removed", None, None),
])
def test_change(old: Any, new: Any, status: str, delta: Any, percent: Any) -> None:
    c = Change("m.json", "k", old, new)
    assert (c.status, c.delta, c.percent) == (status, delta, percent)
    assert type(c.delta) is type(delta)


def test_diff_keeps_null_apart_from_absent() -> None:
    changes = diff({("m", "a"): None, ("m", "b"): 1}, {("m", "b"): 1, ("m", "c"): None})
    assert [(c.key, c.status) for c in changes] == [("a", "removed"), ("c", "added")]
    assert len(diff({("m", "b"): 1}, {("m", "b"): 1}, include_unchanged=True)) == 1
