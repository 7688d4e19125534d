"""The run cache (issue 18): a stale stage whose exact inputs ran before, here or on a clone that
pushed to the shared remote, is restored from that run's record instead of running again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import PIVOT, Project
from seaweed import SeaweedServer

from pivot.remote.packfile import parse_index

# `train` appends to ran.log (ignored by git) each time it executes; `report` too.
PIPELINE = """\
import json
from pydantic import BaseModel
from pivot import stage
from pivot.outputs import Metric

class Params(BaseModel):
    lr: float = 0.1

def mark(name):
    with open("ran.log", "a") as f:
        f.write(name + "\\n")

@stage(deps=["data.txt"], outs=["model.txt", Metric("metrics.json")], params=Params, run_cache=CACHED)
def train(params: Params):
    mark("train")
    open("model.txt", "w").write(open("data.txt").read() + str(params.lr))
    json.dump({"lr": params.lr}, open("metrics.json", "w"))

@stage(deps=["model.txt"], outs=["report.txt"])
def report():
    mark("report")
    open("report.txt", "w").write(open("model.txt").read().upper())
"""


def make(project: Project, cached: bool = True) -> Project:
    project.pipeline(PIPELINE.replace("CACHED", str(cached)))
    project.write("data.txt", "data\n")
    project.write(".gitignore", "ran.log\n")
    return project


def set_lr(project: Project, lr: float) -> None:
    project.write("params.yaml", f"train:\n  lr: {lr}\n")


def ran(p: Project) -> list[str]:
    return p.read("ran.log").split() if p.exists("ran.log") else []


def events(proc: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def records(p: Project) -> dict[str, dict[str, object]]:
    """The local run records, key -> parsed JSON."""
    base = p.root / ".pivot" / "cache" / "runs"
    return {f.parent.name + f.name: json.loads(f.read_bytes()) for f in sorted(base.glob("*/*"))} \
        if base.is_dir() else {}


def record_file(p: Project, stage: str, lr: float) -> Path:
    for key, rec in records(p).items():
        lock = rec["lock"]
        assert isinstance(lock, dict)
        if rec["stage"] == stage and (lock.get("params") or {}).get("lr") == lr:
            return p.root / ".pivot" / "cache" / "runs" / key[:2] / key[2:]
    raise AssertionError(f"no record of {stage} with lr={lr}: {records(p)}")


def toggled(project: Project) -> dict[str, str]:
    """Runs at lr 0.1 then 0.2, then sets 0.1 again; returns the files of the 0.1 run."""
    set_lr(project, 0.1)
    project.pivot("run")
    first = {f: project.read(f) for f in ("model.txt", "metrics.json", "report.txt",
                                          ".pivot/stages/train.lock", ".pivot/stages/report.lock")}
    set_lr(project, 0.2)
    project.pivot("run")
    assert project.read("metrics.json") == '{"lr": 0.2}'
    set_lr(project, 0.1)
    return first


def test_toggle_a_param_back_restores_and_executes_nothing(project: Project) -> None:
    first = toggled(make(project))
    status = project.pivot("status").stdout
    assert "train: stale (param lr: 0.2 -> 0.1); would be restored from run cache (local)" in status, status
    assert "report: stale" in status and "2 restorable from the run cache" in status, status
    dry = project.pivot("run", "--dry-run").stdout
    assert "train: would restore from run cache (local) instead of running" in dry, dry
    proc = project.pivot("run")
    assert "train: restored from run cache (local)" in proc.stdout, proc.stdout
    assert "report: restored from run cache (local)" in proc.stdout, proc.stdout
    assert ran(project) == ["train", "report"] * 2  # the third run executed nothing
    for path, text in first.items():  # outputs, metrics and locks are those of the first run
        assert project.read(path) == text, path
    assert project.pivot("status").stdout.strip() == "all 2 stage(s) up to date"


def test_json_events_say_restored(project: Project) -> None:
    toggled(make(project))
    got = events(project.pivot("run", "--json"))
    restored = [e for e in got if e["event"] == "restored"]
    assert [e["stage"] for e in restored] == ["train", "report"], got
    assert restored[0]["run_cache"] == "local" and restored[0]["restored"] == ["metrics.json", "model.txt"]
    assert got[-1]["restored"] == ["train", "report"] and got[-1]["ran"] == []


def test_no_run_cache_runs_for_one_run(project: Project) -> None:
    toggled(make(project))
    project.pivot("run", "--no-run-cache")
    assert ran(project) == ["train", "report"] * 3


def test_opted_out_stage_always_runs(project: Project) -> None:
    toggled(make(project, cached=False))
    out = project.pivot("run").stdout
    assert "train: running" in out and "train: restored" not in out, out
    assert ran(project).count("train") == 3
    assert not any(r["stage"] == "train" for r in records(project).values())


def test_tampered_record_is_refused_and_the_stage_runs(project: Project) -> None:
    toggled(make(project))
    path = record_file(project, "train", 0.1)
    data = json.loads(path.read_bytes())
    data["lock"]["outs"][1]["hash"] = "0" * 32  # points model.txt at something else
    path.write_text(json.dumps(data))
    proc = project.pivot("run")
    assert "warning: run record" in proc.stderr and "for stage 'train' is refused" in proc.stderr, proc.stderr
    assert "does not match its checksum" in proc.stderr and "Traceback" not in proc.stderr
    assert ran(project).count("train") == 3
    assert project.read("model.txt") == "data\n0.1"


def test_record_whose_object_is_missing_is_refused(project: Project) -> None:
    toggled(make(project))
    lock = json.loads(record_file(project, "train", 0.1).read_bytes())["lock"]
    digest = next(o["hash"] for o in lock["outs"] if o["path"] == "model.txt")
    obj = project.root / ".pivot" / "cache" / "files" / digest[:2] / digest[2:]
    obj.chmod(0o644)
    obj.unlink()
    proc = project.pivot("run")
    assert "for stage 'train' is refused ('model.txt' (" in proc.stderr, proc.stderr
    assert ran(project).count("train") == 3
    assert project.read("model.txt") == "data\n0.1"


def test_gc_keeps_records_whose_outputs_it_keeps(project: Project) -> None:
    make(project)
    set_lr(project, 0.1)
    project.pivot("run")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "lr 0.1")
    set_lr(project, 0.2)
    project.pivot("run")
    assert len(records(project)) == 4
    project.pivot("gc", "--yes")  # 0.1 is committed, 0.2 in the workspace: all kept
    assert len(records(project)) == 4
    set_lr(project, 0.1)
    project.pivot("run")  # restored: 0.2's outputs are referenced by no lock any more
    out = project.pivot("gc", "--yes").stderr
    assert "removed 2 run record(s) whose outputs are not kept (2 kept)" in out, out
    assert record_file(project, "train", 0.1).is_file() and len(records(project)) == 2
    set_lr(project, 0.2)
    project.pivot("run")
    assert ran(project).count("train") == 3  # its record went with its outputs


SLOW = """\
import os, time
from pivot import stage

@stage(deps=["data.txt"], outs=["quick.txt"])
def quick():
    open("quick.txt", "w").write("quick")

@stage(deps=["quick.txt"], outs=["slow.txt"])
def slow():
    open("slow.txt", "w").write("slow")
    open("ready", "w").close()
    while os.path.exists("hold"):
        time.sleep(0.05)
"""


def test_killed_run_leaves_no_record_for_the_killed_stage(project: Project) -> None:
    project.pipeline(SLOW)
    project.write("data.txt", "data\n")
    project.write("hold", "")
    proc = subprocess.Popen([PIVOT, "run"], cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not project.exists("ready"):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    assert [r["stage"] for r in records(project).values()] == ["quick"]
    (project.root / "hold").unlink()
    (project.root / "ready").unlink()
    project.pivot("run")
    assert project.exists("ready")  # slow executed: nothing restored it
    assert sorted(str(r["stage"]) for r in records(project).values()) == ["quick", "slow"]


# -- shared remote ---------------------------------------------------------------------------
def clone(project: Project, tmp_path: Path) -> Project:
    dest = tmp_path / f"clone-{uuid.uuid4().hex[:6]}"
    subprocess.run(["git", "clone", "-q", str(project.root), str(dest)], check=True)
    return Project(dest)


def shared(project: Project, url: str, *options: str) -> None:
    """The origin: the pipeline at lr 0.1, run and committed, with a default remote."""
    make(project)
    set_lr(project, 0.1)
    project.pivot("remote", "add", "store", url, "--default", *options)
    project.pivot("run")
    project.pivot("push", "--run-cache")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "lr 0.1")


def computed_elsewhere(project: Project, tmp_path: Path) -> tuple[Project, Project]:
    """Clone 1 runs lr 0.2 and pushes; clone 2, at its own commit with lr 0.2 too, has not run."""
    one = clone(project, tmp_path)
    set_lr(one, 0.2)
    one.pivot("run")
    assert "uploaded 2 run record(s) to 'store'" in one.pivot("push", "--run-cache").stdout
    two = clone(project, tmp_path)
    set_lr(two, 0.2)
    two.write("notes.md", "another commit\n")
    two.git("add", "-A")
    two.git("commit", "-q", "-m", "lr 0.2 here too")
    return one, two


@pytest.mark.usefixtures("s3_prefix")
def test_a_clone_restores_what_another_clone_pushed(project: Project, seaweed: SeaweedServer, s3_prefix: str,
                                                    tmp_path: Path) -> None:
    shared(project, s3_prefix, "-o", f"endpoint_url={seaweed.endpoint}")
    one, two = computed_elsewhere(project, tmp_path)
    status = two.pivot("status", "--remote").stdout
    assert "train: stale (param lr: 0.1 -> 0.2); would be restored from run cache (remote 'store')" in status, status
    got = events(two.pivot("run", "--json"))
    restored = {str(e["stage"]): e for e in got if e["event"] == "restored"}
    assert sorted(restored) == ["report", "train"], got
    assert restored["train"]["run_cache"] == "remote" and restored["train"]["remote"] == "store"
    assert any(e["event"] == "run_cache_lookup" for e in got), got
    assert ran(two) == []  # no stage function executed in clone 2
    for path in ("model.txt", "metrics.json", "report.txt", ".pivot/stages/train.lock"):
        assert two.read(path) == one.read(path), path
    assert two.pivot("status").stdout.strip() == "all 2 stage(s) up to date"


def test_a_tampered_remote_record_is_refused(project: Project, tmp_path: Path) -> None:
    folder = tmp_path / "remote"
    shared(project, str(folder))
    _one, two = computed_elsewhere(project, tmp_path)
    for pack in (folder / "runs").glob("*.pack"):  # run records travel packed (pivot/remote/runs.py)
        blob = bytearray(pack.read_bytes())
        for e in parse_index(pack.stem, (folder / "runs" / f"{pack.stem}.idx").read_bytes())[1]:
            chunk = bytes(blob[e.offset:e.offset + e.length])
            data = json.loads(chunk)
            if data["stage"] == "train" and data["lock"]["params"] == {"lr": 0.2}:
                blob[e.offset:e.offset + e.length] = chunk.replace(b'"lr":0.2', b'"lr":0.3', 1)
                pack.chmod(0o644)
                pack.write_bytes(bytes(blob))
    proc = two.pivot("run")
    assert "on remote 'store' for stage 'train' is refused" in proc.stderr, proc.stderr
    assert ran(two) == ["train"]  # it ran, made what clone 1 made, and report's record applied
    assert "report: restored from run cache (remote 'store')" in proc.stdout, proc.stdout
    assert two.read("model.txt") == "data\n0.2"


def test_a_damaged_run_pack_index_is_named_and_the_stages_run(project: Project, tmp_path: Path) -> None:
    folder = tmp_path / "remote"
    shared(project, str(folder))
    _one, two = computed_elsewhere(project, tmp_path)
    for idx in (folder / "runs").glob("*.idx"):
        idx.chmod(0o644)
        idx.write_bytes(idx.read_bytes()[:-10])  # cut short
    proc = two.pivot("run")
    assert "run-record index runs/" in proc.stderr and "was refused" in proc.stderr, proc.stderr
    assert sorted(ran(two)) == ["report", "train"]  # nothing restored from the damaged packs
    assert two.read("model.txt") == "data\n0.2"


def test_a_remote_record_whose_object_is_missing_is_refused(project: Project, tmp_path: Path) -> None:
    folder = tmp_path / "remote"
    shared(project, str(folder))
    one, two = computed_elsewhere(project, tmp_path)
    digest = next(o["hash"] for o in yaml.safe_load(one.lock("train"))["outs"] if o["path"] == "model.txt")
    (folder / "files" / digest[:2] / digest[2:]).unlink()
    proc = two.pivot("run")
    assert "run record for stage 'train' (remote 'store') names 'model.txt'" in proc.stderr, proc.stderr
    assert ran(two) == ["train"]  # it ran, made model.txt again, and report's record applied
    assert "report: restored from run cache (remote 'store')" in proc.stdout, proc.stdout
    assert two.read("model.txt") == "data\n0.2"


def test_gc_on_the_remote_keeps_records_of_kept_outputs(project: Project, tmp_path: Path) -> None:
    folder = tmp_path / "remote"
    shared(project, str(folder))
    computed_elsewhere(project, tmp_path)
    assert len(remote_keys(folder)) == 4  # lr 0.1 from the origin, 0.2 from clone 1
    out = project.pivot("gc", "-r", "store", "--workspace", "--yes", "--min-age", "0").stderr
    assert "removed 2 run record(s) whose outputs are not kept (2 kept)" in out, out
    assert len(remote_keys(folder)) == 2
    assert len(list((folder / "runs").glob("*.idx"))) == 1  # the kept records, rewritten into one run pack
    # the kept records (lr 0.1) are still readable: a clone that moves to 0.2 and back restores them
    other = clone(project, tmp_path)
    set_lr(other, 0.2)
    other.pivot("run")
    set_lr(other, 0.1)
    proc = other.pivot("run")
    assert "train: restored from run cache (remote 'store')" in proc.stdout, proc.stdout


def test_push_uploads_records_unless_told_not_to(project: Project, tmp_path: Path) -> None:
    folder = tmp_path / "remote"
    make(project)
    project.pivot("remote", "add", "store", str(folder), "--default")
    project.pivot("run")
    assert "run record" not in project.pivot("push", "--no-run-cache").stdout
    assert not (folder / "runs").exists()
    assert json.loads(project.pivot("push", "--json").stdout)["run_records"] == 2
    assert len(remote_keys(folder)) == 2
    assert json.loads(project.pivot("push", "--json").stdout)["run_records"] == 0


def remote_keys(folder: Path) -> set[str]:
    """The run keys of every run pack on a folder remote."""
    return {e.digest for f in (folder / "runs").glob("*.idx") for e in parse_index(f.stem, f.read_bytes())[1]}
