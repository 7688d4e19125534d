"""A fresh clone pulls instead of recomputing (issue #17): outputs that match their committed
lock but are missing here are "up to date, on the remote", `pivot status` says 'pivot pull',
and `pivot run` fetches them instead of running their stages (`--no-pull` computes)."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import Project
from seaweed import SeaweedServer

# Three chained stages; each appends its name to ran.log (ignored by git) when it runs.
PIPELINE = """\
import os
from pivot import stage

def mark(name):
    with open("ran.log", "a") as f:
        f.write(name + "\\n")

@stage(deps=["data/raw.txt"], outs=["clean.txt"])
def prepare():
    mark("prepare")
    open("clean.txt", "w").write(open("data/raw.txt").read().upper())

@stage(deps=["clean.txt"], outs=["features"])
def featurize():
    mark("featurize")
    os.makedirs("features", exist_ok=True)
    for i in range(3):
        open(f"features/f{i}.txt", "w").write(open("clean.txt").read() + str(i))

@stage(deps=["features"], outs=["model.bin"])
def train():
    mark("train")
    parts = sorted(os.listdir("features"))
    open("model.bin", "w").write("|".join(open(f"features/{p}").read() for p in parts))
"""
STAGES = ["prepare", "featurize", "train"]
OUTPUTS = ["clean.txt", "features/f0.txt", "features/f1.txt", "features/f2.txt", "model.bin"]


def build(project: Project, url: str, *options: str) -> None:
    project.pipeline(PIPELINE)
    project.write("data/raw.txt", "hello\n")
    project.write(".gitignore", "ran.log\n")
    project.pivot("run")
    project.pivot("remote", "add", "store", url, "--default", *options)
    project.pivot("push")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "pipeline")


def clone(project: Project, tmp_path: Path) -> Project:
    dest = tmp_path / f"clone-{uuid.uuid4().hex[:6]}"
    subprocess.run(["git", "clone", "-q", str(project.root), str(dest)], check=True)
    return Project(dest)


def ran(p: Project) -> list[str]:
    return p.read("ran.log").split() if p.exists("ran.log") else []


def events(p: Project, *args: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in p.pivot("run", "--json", *args).stdout.splitlines()]


def lock_hash(p: Project, stage: str) -> str:
    return str(yaml.safe_load(p.lock(stage))["outs"][0]["hash"])


@pytest.fixture
def pushed(project: Project, tmp_path: Path) -> tuple[Project, Path]:
    folder = tmp_path / "remote"
    build(project, str(folder))
    return project, folder


def test_status_says_up_to_date_on_the_remote(pushed: tuple[Project, Path], tmp_path: Path) -> None:
    other = clone(pushed[0], tmp_path)
    for args in (("--remote",), ("-r", "store"), ()):  # a folder remote is asked directly
        out = other.pivot("status", *args).stdout
        assert "stale" not in out, out
        assert "3 stage(s) up to date, outputs on remote 'store': run 'pivot pull'" in out
        assert "train: up to date; model.bin on remote 'store'" in out
    entries = json.loads(other.pivot("status", "--remote", "--json").stdout)
    assert [e["stale"] for e in entries] == [False] * 3
    assert entries[2]["on_remote"] == ["model.bin"] and entries[2]["remote"] == "store"
    assert ran(other) == []


def test_dry_run_says_it_would_restore(pushed: tuple[Project, Path], tmp_path: Path) -> None:
    other = clone(pushed[0], tmp_path)
    out = other.pivot("run", "--dry-run").stdout
    assert ": would run" not in out, out
    assert "train: would restore model.bin from remote 'store'" in out
    assert "dry run: 0 would run, 3 up to date" in out
    assert ran(other) == [] and not other.exists("model.bin")


def test_run_fetches_instead_of_running(pushed: tuple[Project, Path], tmp_path: Path) -> None:
    project = pushed[0]
    other = clone(project, tmp_path)
    got = events(other)
    assert [e["event"] for e in got if e.get("stage")] == ["skipped"] * 3, got
    skipped = {e["stage"]: e for e in got if e["event"] == "skipped"}
    assert skipped["featurize"]["from_remote"] == ["features"] and skipped["featurize"]["remote"] == "store"
    assert ran(other) == []
    for path in OUTPUTS:
        assert (other.root / path).read_bytes() == (project.root / path).read_bytes()
    assert other.pivot("status").stdout.strip() == "all 3 stage(s) up to date"
    assert other.git("status", "--porcelain") == ""


def test_run_says_where_it_restored_from(pushed: tuple[Project, Path], tmp_path: Path) -> None:
    other = clone(pushed[0], tmp_path)
    out = other.pivot("run").stdout
    assert "prepare: up to date; restored clean.txt from remote 'store'" in out
    assert "train: up to date; restored model.bin from remote 'store'" in out
    assert ran(other) == []


def test_no_pull_computes(pushed: tuple[Project, Path], tmp_path: Path) -> None:
    project = pushed[0]
    other = clone(project, tmp_path)
    other.pivot("run", "--no-pull")
    assert ran(other) == STAGES
    assert other.read("model.bin") == project.read("model.bin")


def test_a_clone_without_a_remote_keeps_todays_message(pushed: tuple[Project, Path], tmp_path: Path) -> None:
    other = clone(pushed[0], tmp_path)
    other.pivot("remote", "remove", "store")
    out = other.pivot("status").stdout
    assert "prepare: stale (output 'clean.txt' is missing and not in the cache)" in out
    assert "on remote" not in out
    other.pivot("run")
    assert ran(other) == STAGES


def test_an_object_the_remote_lacks_runs_its_stage_and_downstream(pushed: tuple[Project, Path],
                                                                   tmp_path: Path) -> None:
    project, folder = pushed
    digest = lock_hash(project, "featurize")  # the directory's manifest
    (folder / "files" / digest[:2] / digest[2:]).unlink()
    other = clone(project, tmp_path)
    status = other.pivot("status").stdout
    assert "featurize: stale" in status and "train: stale" in status
    assert "1 stage(s) up to date, outputs on remote 'store': run 'pivot pull'" in status
    other.pivot("run")
    assert ran(other) == ["featurize", "train"]
    for path in OUTPUTS:
        assert (other.root / path).read_bytes() == (project.root / path).read_bytes()


def test_an_object_gone_between_plan_and_fetch_runs_the_stage(pushed: tuple[Project, Path],
                                                             tmp_path: Path) -> None:
    """The existence query said yes, the fetch found it damaged: the stage runs, with a note."""
    project, folder = pushed
    digest = lock_hash(project, "prepare")
    obj = folder / "files" / digest[:2] / digest[2:]
    obj.chmod(0o644)
    obj.write_text("not what the lock says\n")
    other = clone(project, tmp_path)
    got = events(other)
    notes = [str(e["text"]) for e in got if e["event"] == "note"]
    assert any("'clean.txt' is not on remote 'store' after all" in n for n in notes), got
    assert ran(other) == ["prepare"]
    assert other.read("model.bin") == project.read("model.bin")


@pytest.mark.usefixtures("s3_prefix")
def test_s3_status_uses_the_index_once_it_knows(project: Project, seaweed: SeaweedServer, s3_prefix: str,
                                                tmp_path: Path) -> None:
    build(project, s3_prefix, "-o", f"endpoint_url={seaweed.endpoint}")
    other = clone(project, tmp_path)
    assert "is missing and not in the cache" in other.pivot("status").stdout  # this clone knows nothing yet
    assert "outputs on remote 'store': run 'pivot pull'" in other.pivot("status", "--remote").stdout
    assert "3 stage(s) up to date, outputs on remote 'store'" in other.pivot("status").stdout  # the index knows
    other.pivot("run")
    assert ran(other) == []
    assert other.read("model.bin") == project.read("model.bin")


def test_an_unreachable_remote_warns_and_runs(pushed: tuple[Project, Path], tmp_path: Path) -> None:
    project, folder = pushed
    other = clone(project, tmp_path)
    folder.rename(tmp_path / "moved")  # the default remote's folder is gone
    proc = other.pivot("run")
    assert "warning: " in proc.stderr and "stages whose outputs are missing here run instead" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert ran(other) == STAGES
