"""Folders' listings remembered by their stat (pivot/listings.py): a run looks through
.pivot/stages, .pivot/logs and each folder of outputs (orphan locks, a killed run's
temporaries, symbolic links) only when the folder changed since a listing. Each test changes
what a listing must find after the answers are remembered, and requires the run to see it; one
shows that the answers are used at all."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Project
from test_fast_paths import TWO

from pivot import listings
from pivot.state import unseal

PIPELINE = TWO  # upper: data/raw.txt -> data/upper.txt; final: data/upper.txt -> data/final.txt


def remembered(project: Project) -> set[tuple[str, str]]:
    """(question, folder relative to the project) of each answer the state database holds."""
    db = sqlite3.connect(project.root / ".pivot" / "state.db")
    try:
        row = db.execute("SELECT value FROM kv WHERE key = ?", (listings.KEY,)).fetchone()
    finally:
        db.close()
    rows = unseal(row[0]) if row else None
    root = os.path.realpath(project.root)
    return {(what, os.path.relpath(os.path.realpath(folder), root))
            for what, _, folder in (k.partition("\n") for k in rows or {})}


def with_answers(project: Project) -> Project:
    """A run two-stage project whose folders are older than the racy window, and a run that
    remembered what it found in them."""
    project.write("data/raw.txt", "hello\n")
    project.pipeline(PIPELINE)
    project.pivot("run")
    time.sleep(2.1)  # a folder changed within 2 s is listed again next time
    assert "nothing to run" in project.pivot("run").stdout
    assert remembered(project) >= {("links", "data"), ("orphan locks", ".pivot/stages"),
                                   ("leftovers .*.lock.*.tmp", ".pivot/stages"),
                                   ("leftovers *.running", ".pivot/logs"), ("lists cached outputs", ".gitignore")}
    return project


RUN_WITHOUT_LISTING = """
import os, sys
from pivot.cli.main import main

watched = [os.path.realpath(p) for p in (".pivot/stages", ".pivot/logs", "data")]

def refuse(real):
    def listing(path=".", *args, **kwargs):
        if os.path.realpath(path) in watched:
            print("listed", path)
            raise SystemExit(3)
        return real(path, *args, **kwargs)
    return listing

os.listdir, os.scandir = refuse(os.listdir), refuse(os.scandir)
sys.argv = ["pivot", "run"]
main()
"""


def test_folders_unchanged_since_a_listing_are_not_listed_again(project: Project) -> None:
    with_answers(project)
    done = subprocess.run([sys.executable, "-c", RUN_WITHOUT_LISTING], cwd=project.root,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "nothing to run" in done.stdout, done
    (project.root / ".pivot" / "stages" / "gone.lock").write_text("x")  # the folder changed: listed
    done = subprocess.run([sys.executable, "-c", RUN_WITHOUT_LISTING], cwd=project.root,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "listed" in done.stdout, done


def _orphan(project: Project) -> str:
    lock = project.root / ".pivot" / "stages"
    (lock / "gone.lock").write_bytes((lock / "upper.lock").read_bytes())
    return ".pivot/stages/gone.lock"


def _renamed(project: Project) -> str:
    # the folder of locks does not change: the stages defined do
    project.pipeline(PIPELINE.replace("def final", "def final2"))
    return ".pivot/stages/final.lock"


def _half_written(project: Project) -> str:
    (project.root / ".pivot" / "stages" / ".upper.lock.123.tmp").write_text("half")
    return ".pivot/stages/.upper.lock.123.tmp"


def _running(project: Project) -> str:
    (project.root / ".pivot" / "logs" / "upper.running").write_text("")
    return ".pivot/logs/upper.running"


@pytest.mark.parametrize("change", [_orphan, _renamed, _half_written, _running])
def test_what_appears_in_a_remembered_folder_is_found(project: Project, change: object) -> None:
    with_answers(project)
    assert callable(change)
    path = change(project)
    assert (project.root / path).exists()
    project.pivot("run")
    assert not (project.root / path).exists(), path


@pytest.mark.parametrize("change", ["block edited", "output added"])
def test_the_gitignore_lists_every_cached_output_again(project: Project, change: str) -> None:
    with_answers(project)
    gitignore = project.root / ".gitignore"
    if change == "block edited":
        gitignore.write_text(gitignore.read_text().replace("/data/upper.txt\n", ""))
    else:  # the file is as remembered: the outputs declared are not
        project.pipeline(PIPELINE.replace('outs=["data/final.txt"]', 'outs=["data/final.txt", "data/more.txt"]')
                         .replace('+ "!")', '+ "!"); open("data/more.txt", "w").write("more")'))
    project.pivot("run")
    listed = gitignore.read_text().splitlines()
    assert "/data/upper.txt" in listed and "/data/final.txt" in listed, listed
    assert change == "block edited" or "/data/more.txt" in listed, listed


def test_a_link_put_in_place_of_an_output_is_refused(project: Project, tmp_path: Path) -> None:
    with_answers(project)
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("HELLO\n")
    target = project.root / "data" / "upper.txt"
    target.unlink()
    target.symlink_to(outside)
    done = project.pivot("status", check=False)
    assert done.returncode == 1 and "leads outside the project" in done.stderr + done.stdout, done


def test_a_damaged_row_is_forgotten(project: Project) -> None:
    with_answers(project)
    db = sqlite3.connect(project.root / ".pivot" / "state.db")
    try:
        (value,) = db.execute("SELECT value FROM kv WHERE key = ?", (listings.KEY,)).fetchone()
        db.execute("UPDATE kv SET value = ? WHERE key = ?", (value[:-3] + b"xyz", listings.KEY))
        db.commit()
    finally:
        db.close()
    assert remembered(project) == set()
    done = subprocess.run([sys.executable, "-c", RUN_WITHOUT_LISTING], cwd=project.root,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "listed" in done.stdout, done
