"""A restore killed at any moment is finished by the next `pivot checkout` or `pivot pull`,
without --force: what a killed restore leaves is recognised as Pivot's own work, while a user's
edit is still never overwritten."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import PIVOT, Project

FILES = 2000  # none empty: an empty temporary left by a kill must not pass for a cached file

PIPELINE = f'''
from pivot import stage

@stage(outs=["out"])
def make():
    import os
    os.makedirs("out/sub", exist_ok=True)
    for i in range({FILES}):
        open(f"out/sub/f{{i}}.txt" if i % 2 else f"out/f{{i}}.txt", "w").write(f"file {{i}}\\n" * (i % 7 + 1))
'''


def tree(root: Path) -> dict[str, bytes]:
    found = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(folder, name)
            found[os.path.relpath(full, root)] = Path(full).read_bytes()
    return found


@pytest.fixture
def built(project: Project) -> tuple[Project, dict[str, bytes]]:
    project.pipeline(PIPELINE)
    project.pivot("run")
    return project, tree(project.root / "out")


def timed(project: Project, *args: str) -> float:
    start = time.monotonic()
    project.pivot(*args)
    return time.monotonic() - start


def kill_after(project: Project, delay: float, *args: str) -> None:
    proc = subprocess.Popen([PIVOT, *args], cwd=project.root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def kill_at_many_points(project: Project, locked: dict[str, bytes], command: str, lose,
                        delays: int = 12) -> int:
    """`lose()` makes the restore necessary; `pivot <command>` is killed at `delays` moments over
    a whole restore, then run again: it must finish the job without --force. Returns how many
    kills left a partly restored folder (so the test knows it hit the middle)."""
    lose()
    longest = timed(project, command)
    assert tree(project.root / "out") == locked
    partial = 0
    for i in range(delays):
        lose()
        kill_after(project, longest * (i + 0.5) / delays, command)
        left = tree(project.root / "out") if (project.root / "out").is_dir() else {}
        partial += bool(left) and left != locked
        done = project.pivot(command)
        assert "kept" not in done.stdout + done.stderr
        assert tree(project.root / "out") == locked, f"after a kill at {i}/{delays} of the restore"
    return partial


def test_checkout_killed_at_any_moment_is_finished_by_the_next_checkout(built) -> None:
    project, locked = built
    partial = kill_at_many_points(project, locked, "checkout", lambda: shutil.rmtree(project.root / "out"))
    assert partial >= 1, "no kill landed in the middle of a restore; the test proved nothing"


def test_pull_killed_at_any_moment_is_finished_by_the_next_pull(built, tmp_path: Path) -> None:
    project, locked = built
    project.pivot("remote", "add", "store", str(tmp_path / "remote"), "--default")
    project.pivot("push")

    def lose() -> None:
        shutil.rmtree(project.root / "out")
        shutil.rmtree(project.root / ".pivot" / "cache")

    kill_at_many_points(project, locked, "pull", lose, delays=5)


@pytest.mark.parametrize("mode", ["hardlink"])
def test_a_killed_restore_is_finished_in_the_link_modes(built, mode: str) -> None:
    project, locked = built
    project.write(".pivot/config.yaml", f"pipeline: pipeline.py\ncache:\n  link: {mode}\n")
    kill_at_many_points(project, locked, "checkout", lambda: shutil.rmtree(project.root / "out"), delays=4)


def test_a_temporary_left_by_a_killed_restore_does_not_block_the_next(built) -> None:
    project, locked = built
    shutil.rmtree(project.root / "out" / "sub")
    (project.root / "out" / ".f1.txt.pivot-tmp").write_text("file 1\nfi")  # a copy cut short
    done = project.pivot("checkout")
    assert "restored out" in done.stdout
    assert tree(project.root / "out") == locked
    assert "differed from its lock" not in done.stdout  # nothing of the user's to keep


def test_a_user_edit_after_a_finished_restore_is_kept(built) -> None:
    project, _locked = built
    shutil.rmtree(project.root / "out")
    project.pivot("checkout")
    (project.root / "out" / "f2.txt").write_text("my own edit\n")
    proc = project.pivot("checkout", check=False)
    assert "kept out: it was modified and its current content is not in the cache" in proc.stdout + proc.stderr
    assert (project.root / "out" / "f2.txt").read_text() == "my own edit\n"


def test_a_user_edit_beside_a_left_temporary_is_kept(built) -> None:
    project, _locked = built
    (project.root / "out" / ".f1.txt.pivot-tmp").write_text("fi")
    (project.root / "out" / "f2.txt").write_text("my own edit\n")
    proc = project.pivot("checkout", check=False)
    assert "kept out" in proc.stdout + proc.stderr
    assert (project.root / "out" / "f2.txt").read_text() == "my own edit\n"
