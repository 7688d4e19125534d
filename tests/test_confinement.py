"""Nothing Pivot reads or writes leaves the project through a symbolic link: every dep and output
is resolved (each folder on the way and the path itself) before any stage runs."""

from __future__ import annotations

import os
import shutil
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


# -- links made after the graph was checked: by a stage while it runs, or by the user before a checkout --

LINKING_STAGE = '''
from pivot import stage

@stage(outs=["data/out.txt"])
def make():
    import os, shutil
    if {link}:
        shutil.rmtree("data", ignore_errors=True)
        os.symlink({outside!r}, "data")
    os.makedirs("data", exist_ok=True)
    open("data/out.txt", "w").write("{text}")
'''


def everything_cached(project: Project) -> list[bytes]:
    return [p.read_bytes() for p in project.cache_objects()]


def test_a_stage_that_links_its_output_folder_outside_fails_and_nothing_outside_is_cached(
        project: Project, outside: Path) -> None:
    project.pipeline(LINKING_STAGE.format(link=False, outside=str(outside), text="v1"))
    project.pivot("run")
    lock = project.lock("make")
    project.pipeline(LINKING_STAGE.format(link=True, outside=str(outside), text="written outside"))
    proc = project.pivot("run", check=False)
    said = proc.stdout + proc.stderr
    assert "Traceback" not in said and proc.returncode == 1
    assert "stage 'make': output 'data/out.txt' leads outside the project" in said
    assert str(outside.resolve()) in said
    assert b"written outside" not in everything_cached(project)
    assert project.lock("make") == lock
    # what the stage wrote there is left as it was: Pivot neither removed it nor moved v1 there
    assert {p.name: p.read_text() for p in outside.iterdir()} == {"out.txt": "written outside"}


DIR_WITH_A_LINK = '''
from pivot import stage

@stage(outs=["out"])
def make():
    import os
    os.makedirs("out/deeper", exist_ok=True)
    open("out/plain.txt", "w").write("plain")
    os.symlink({target!r}, "out/deeper/secret")
'''


def test_a_link_inside_an_output_folder_leading_outside_is_refused(project: Project, outside: Path) -> None:
    (outside / "hostname").write_text("secret host\n")
    project.pipeline(DIR_WITH_A_LINK.format(target=str(outside / "hostname")))
    proc = project.pivot("run", check=False)
    said = proc.stdout + proc.stderr
    assert "Traceback" not in said and proc.returncode == 1
    assert "output 'out' holds 'out/deeper/secret', which leads outside the project" in said
    assert str((outside / "hostname").resolve()) in said
    assert b"secret host\n" not in everything_cached(project)
    assert not (project.root / ".pivot" / "stages" / "make.lock").exists()
    assert (outside / "hostname").read_text() == "secret host\n"


def test_a_link_inside_an_output_folder_to_a_folder_outside_is_refused(project: Project, outside: Path) -> None:
    (outside / "hostname").write_text("secret host\n")
    project.pipeline(DIR_WITH_A_LINK.format(target=str(outside)))
    proc = project.pivot("run", check=False)
    assert "'out/deeper/secret', which leads outside the project" in proc.stdout + proc.stderr
    assert b"secret host\n" not in everything_cached(project)


def test_links_inside_an_output_folder_that_stay_inside_are_fine(project: Project) -> None:
    project.write("elsewhere/kept.txt", "inside\n")
    project.pipeline(DIR_WITH_A_LINK.format(target="../../elsewhere/kept.txt"))
    project.pivot("run")
    assert b"inside\n" in everything_cached(project)


DIR_OUTPUT = '''
from pivot import stage

@stage(outs=["data/out"])
def make():
    import os
    os.makedirs("data/out/sub", exist_ok=True)
    open("data/out/sub/a.txt", "w").write("a")
    open("data/out/b.txt", "w").write("b")
'''


@pytest.mark.parametrize("mode", ["copy", "symlink"])
def test_checkout_through_a_folder_inside_an_output_linked_outside_is_refused(
        project: Project, outside: Path, mode: str) -> None:
    """Also for pull, and the git hooks' checkout (they call the same checkout)."""
    project.write(".pivot/config.yaml", f"pipeline: pipeline.py\ncache:\n  link: {mode}\n")
    project.pipeline(DIR_OUTPUT)
    project.pivot("run")
    project.pivot("remote", "add", "store", str(outside.parent / "remote"), "--default")
    project.pivot("push")
    (project.root / "data/out/b.txt").unlink()
    shutil.rmtree(project.root / "data/out/sub")
    os.symlink(outside, project.root / "data/out/sub")
    for command in ("checkout", "pull"):
        refused(project, command, names=("'data/out'", "data/out/sub", str(outside.resolve()), "outside the project"))
        assert list(outside.iterdir()) == []
        assert not (project.root / "data/out/b.txt").exists()  # all refused before anything was written


def test_checkout_after_the_user_linked_an_output_folder_outside_is_refused(project: Project, outside: Path) -> None:
    project.pipeline(DIR_OUTPUT)
    project.pivot("run")
    shutil.rmtree(project.root / "data")
    os.symlink(outside, project.root / "data")
    refused(project, "checkout", names=("data/out", str(outside.resolve()), "outside the project"))
    assert list(outside.iterdir()) == []
