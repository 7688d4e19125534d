"""Nothing Pivot reads or writes leaves the project through a symbolic link: every dep and output
is resolved (each folder on the way and the path itself) before any stage runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Project
from test_errors import refused

PIPELINE = '''
from pivot import stage

@stage(deps=["data/raw.txt"], outs=["{out}"])
def make():
    import os
    os.makedirs(os.path.dirname("{out}") or ".", exist_ok=True)
    open("{out}", "w").write(open("data/raw.txt").read().upper())
'''


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def test_output_below_a_linked_folder_outside_is_refused(project: Project, outside: Path) -> None:
    project.write("data/raw.txt", "hello\n")
    os.symlink(outside, project.root / "linked")
    project.pipeline(PIPELINE.format(out="linked/out.txt"))
    line = refused(project, "run", names=("make", "linked/out.txt", str(outside.resolve()), "outside the project"))
    assert "symbolic link" in line
    assert not (outside / "out.txt").exists()
    refused(project, "status", names=("make", "linked/out.txt"))


def test_output_that_is_itself_a_link_to_a_folder_elsewhere_is_refused(project: Project, outside: Path) -> None:
    project.write("data/raw.txt", "hello\n")
    os.symlink(outside, project.root / "out")
    project.pipeline(PIPELINE.format(out="out"))
    refused(project, "run", names=("make", "'out'", str(outside.resolve())))
    assert list(outside.iterdir()) == []


def test_dep_read_through_a_link_outside_is_refused(project: Project, outside: Path) -> None:
    (outside / "raw.txt").write_text("secret\n")
    os.symlink(outside, project.root / "data")
    project.pipeline(PIPELINE.format(out="out.txt"))
    refused(project, "run", names=("make", "dep 'data/raw.txt'", "outside the project"))


def test_output_leading_into_pivot_dir_is_refused(project: Project) -> None:
    project.write("data/raw.txt", "hello\n")
    os.symlink(project.root / ".pivot", project.root / "sneaky")
    project.pipeline(PIPELINE.format(out="sneaky/stages/x.lock"))
    refused(project, "run", names=("make", "sneaky/stages/x.lock", ".pivot/"))


def test_a_link_that_stays_inside_the_project_is_fine(project: Project) -> None:
    project.write("data/raw.txt", "hello\n")
    (project.root / "real").mkdir()
    os.symlink("real", project.root / "alias")
    project.pipeline(PIPELINE.format(out="alias/out.txt"))
    project.pivot("run")
    assert (project.root / "real" / "out.txt").read_text() == "HELLO\n"
