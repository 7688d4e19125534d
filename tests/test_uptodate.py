"""Proofs of up-to-date stages (pivot/uptodate.py): a stage found up to date remembers the
stats that decided it, and is up to date again while they hold, without reading its lock or
hashing. Each test changes one thing a full decision would see, after the proofs are taken, and
requires status or run to see it too; one shows that the proofs are used at all."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import Project

from pivot import uptodate

TWO = '''
from pivot import IncrementalOut, stage

@stage(deps=["data/raw.txt"], outs=["data/upper.txt"])
def upper():
    open("data/upper.txt", "w").write(open("data/raw.txt").read().upper())


# declared from files read at import: the stage's code fingerprint does not depend on them
FINAL_OUT = IncrementalOut("data/final.txt") if open("final-kind.txt").read() == "incremental" else "data/final.txt"


@stage(deps=open("final-deps.txt").read().split(), outs=[FINAL_OUT])
def final():
    open("data/final.txt", "w").write(open("data/upper.txt").read() + "!")
'''


def proven(project: Project) -> set[str]:
    """The stages whose proof the state database holds."""
    db = sqlite3.connect(project.root / ".pivot" / "state.db")
    try:
        row = db.execute("SELECT value FROM kv WHERE key = ?", (uptodate.KEY,)).fetchone()
    finally:
        db.close()
    return set(uptodate.decode(row[0])) if row else set()


def with_proofs(project: Project) -> Project:
    """A run two-stage project, its files older than the racy window, and a status that took
    the proofs of both stages."""
    project.write("data/raw.txt", "hello\n")
    project.write("final-deps.txt", "data/upper.txt\n")
    project.write("final-kind.txt", "out")
    project.pipeline(TWO)
    project.pivot("run")
    time.sleep(2.1)  # nothing younger than 2 s vouches for its content by its stat
    assert "all 2 stage(s) up to date" in project.pivot("status").stdout
    assert proven(project) == {"upper", "final"}
    return project


PLAN_WITHOUT_PREPARING = """
import sys
from pivot.planning import plan
from pivot.repo import Repo
from pivot.workspace import Workspace

def refuse(self, name, *args, **kwargs):
    print("prepared", name)
    raise SystemExit(3)

Repo.prepare = refuse
with Workspace.find() as ws:
    for p in plan(ws.repo):
        print(p.name, "stale" if p.decision.run else "up to date")
"""


def test_stages_with_proofs_are_decided_without_preparing_them(project: Project) -> None:
    with_proofs(project)
    done = subprocess.run([sys.executable, "-c", PLAN_WITHOUT_PREPARING], cwd=project.root,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split("\n")[:2] == ["upper up to date", "final up to date"], done
    project.write("data/raw.txt", "bye\n")  # the proof of 'upper' no longer holds: prepared
    done = subprocess.run([sys.executable, "-c", PLAN_WITHOUT_PREPARING], cwd=project.root,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "prepared upper" in done.stdout, done


def test_an_output_edited_in_place_keeping_size_and_mtime_is_seen(project: Project) -> None:
    with_proofs(project)
    path = project.root / "data" / "final.txt"
    st = os.stat(path)
    with open(path, "r+") as f:  # same inode, same size
        f.write("J")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: only the ctime moved
    out = project.pivot("status", "--explain").stdout
    assert "final: up to date; data/final.txt will be restored from the cache" in out, out  # the locked version
    assert "upper: up to date\n" in out


def test_an_edited_function_is_seen(project: Project) -> None:
    with_proofs(project)
    project.pipeline(TWO.replace('+ "!"', '+ "?"'))
    out = project.pivot("status", "--explain").stdout
    assert "final: stale" in out and "code:" in out, out
    assert "upper: stale" not in out


@pytest.mark.parametrize(("declared_in", "text", "seen"), [
    ("final-deps.txt", "data/upper.txt\ndata/raw.txt\n", "dep 'data/raw.txt' added"),
    ("final-kind.txt", "incremental", "type changed out -> incremental"),  # same paths, same files
])
def test_a_declaration_the_fingerprint_does_not_cover_is_seen(project: Project, declared_in: str, text: str,
                                                               seen: str) -> None:
    """The deps and the output's kind are read from files when the pipeline is imported: the
    stage's code fingerprint is the same, its declaration is not."""
    with_proofs(project)
    project.write(declared_in, text)
    out = project.pivot("status", "--explain").stdout
    assert "final: stale" in out and seen in out, out


def test_a_rewritten_lock_file_is_read_again(project: Project) -> None:
    with_proofs(project)
    path = project.root / ".pivot" / "stages" / "final.lock"
    text = path.read_text()
    locked = text.split("hash: ")[1][:32]  # the dep's hash: the lock now names another version
    path.write_text(text.replace(locked, "a" * 32, 1))
    out = project.pivot("status", "--explain").stdout
    assert "final: stale" in out and "dep 'data/upper.txt' changed" in out, out


def test_a_stage_after_a_stale_one_is_stale_and_a_run_runs_both(project: Project) -> None:
    with_proofs(project)
    project.write("data/raw.txt", "bye\n")
    out = project.pivot("status", "--explain").stdout
    assert "upper: stale" in out and "final: stale" in out and "upstream stage 'upper' will run" in out, out
    out = project.pivot("run").stdout
    assert project.read("data/final.txt") == "BYE\n!"
    assert "nothing to run" in project.pivot("run").stdout


def test_a_run_skips_proven_stages_and_runs_the_rest(project: Project) -> None:
    """`pivot run` uses the proofs too, and a stage it runs is decided again by the next command."""
    with_proofs(project)
    assert "nothing to run" in project.pivot("run").stdout
    project.pipeline(TWO.replace('+ "!"', '+ "?"'))
    project.pivot("run")
    assert project.read("data/final.txt") == "HELLO\n?"
    project.write("data/final.txt", "edited by hand\n")  # the output it wrote is not vouched for by any old proof
    out = project.pivot("status", "--explain").stdout
    assert "final: up to date; data/final.txt will be restored from the cache" in out, out


def test_damaged_proofs_are_forgotten(project: Project) -> None:
    with_proofs(project)
    db = sqlite3.connect(project.root / ".pivot" / "state.db")
    try:
        (row,) = db.execute("SELECT value FROM kv WHERE key = ?", (uptodate.KEY,)).fetchone()
        db.execute("UPDATE kv SET value = ? WHERE key = ?", (row[:-3] + b"xyz", uptodate.KEY))
        db.commit()
    finally:
        db.close()
    project.write("data/raw.txt", "bye\n")
    out = project.pivot("status", "--explain").stdout
    assert "upper: stale" in out and "final: stale" in out, out
    assert proven(project) == set()  # nothing was up to date: nothing new to remember


PARAMS = '''
from pydantic import BaseModel
from pivot import stage


class TrainParams(BaseModel):
    epochs: int = 2


@stage(outs=["model.txt"], params=TrainParams)
def train(params: TrainParams):
    open("model.txt", "w").write(str(params.epochs))
'''


def test_changed_params_are_seen(project: Project) -> None:
    project.pipeline(PARAMS)
    project.pivot("run")
    time.sleep(2.1)
    assert "all 1 stage(s) up to date" in project.pivot("status").stdout
    assert proven(project) == {"train"}
    project.write("params.yaml", "train:\n  epochs: 3\n")
    out = project.pivot("status", "--explain").stdout
    assert "train: stale" in out and "param epochs: 2 -> 3" in out, out


def test_the_proof_of_a_stage_no_longer_defined_is_dropped(project: Project) -> None:
    with_proofs(project)
    project.pipeline(TWO.replace("def final", "def final2"))  # 'final' renamed: its proof is of no use
    project.pivot("run")
    time.sleep(2.1)
    assert "all 2 stage(s) up to date" in project.pivot("status").stdout
    assert proven(project) == {"upper", "final2"}
