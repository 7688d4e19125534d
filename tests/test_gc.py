"""pivot gc: nothing a local branch or tag needs is lost by default, and a destructive run asks
first (a [y/N] question on a terminal; --yes without one)."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

from conftest import PIVOT, Project

PIPELINE = textwrap.dedent("""\
    from pivot import stage

    @stage(deps=["in.txt"], outs=["out.txt"])
    def copy():
        open("out.txt", "w").write(open("in.txt").read())
    """)


def commit_run(project: Project, text: str, message: str) -> set[Path]:
    """Run the pipeline on `text`, commit, and return the cache objects this run added."""
    before = set(project.cache_objects())
    project.write("in.txt", text)
    project.pivot("run")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", message)
    return set(project.cache_objects()) - before


def two_commits(project: Project) -> set[Path]:
    """Two commits on main; returns the objects only the first (older) one needs."""
    project.pipeline(PIPELINE)
    old = commit_run(project, "old\n", "old")
    assert old and commit_run(project, "new\n", "new")
    return old


def gc(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """`pivot gc` with no terminal on stdin."""
    return subprocess.run([PIVOT, "gc", *args], cwd=project.root, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


def gc_on_terminal(project: Project, answer: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`pivot gc` whose stdin is a terminal (a pty), answering `answer` to its question."""
    master, slave = os.openpty()
    try:
        os.write(master, answer.encode() + b"\n")
        return subprocess.run([PIVOT, "gc", *args], cwd=project.root, stdin=slave, capture_output=True,
                              text=True, timeout=120)
    finally:
        os.close(slave)
        os.close(master)


def test_default_gc_keeps_what_an_older_commit_of_a_branch_needs(project: Project) -> None:
    old = two_commits(project)
    kept = gc(project, "--yes")
    assert kept.returncode == 0 and "removed 0 object(s)" in kept.stdout, kept
    assert all(p.exists() for p in old)
    assert "would remove 0 object(s)" in gc(project, "--dry-run").stdout
    gone = gc(project, "--workspace", "--yes")
    assert gone.returncode == 0 and f"removed {len(old)} object(s)" in gone.stdout, gone
    assert not any(p.exists() for p in old)
    assert project.pivot("status").stdout.strip() == "all 1 stage(s) up to date"


def test_default_gc_keeps_what_a_tagged_commit_needs(project: Project) -> None:
    project.pipeline(PIPELINE)
    commit_run(project, "base\n", "base")
    project.git("checkout", "-q", "-b", "experiment")
    tagged = commit_run(project, "experiment\n", "experiment")
    project.git("tag", "v-experiment")
    project.git("checkout", "-q", "main")
    project.git("branch", "-q", "-D", "experiment")  # only the tag still reaches that commit
    project.pivot("checkout", "--force")
    assert "removed 0 object(s)" in gc(project, "--yes").stdout
    assert all(p.exists() for p in tagged)
    project.git("tag", "-d", "v-experiment")
    assert f"removed {len(tagged)} object(s)" in gc(project, "--yes").stdout  # no ref needs it now
    assert not any(p.exists() for p in tagged)


def test_all_branches_keeps_branch_tips_only(project: Project) -> None:
    old = two_commits(project)
    assert f"would remove {len(old)} object(s)" in gc(project, "--all-branches", "--dry-run").stdout
    assert "would remove 0 object(s)" in gc(project, "--all-commits", "--dry-run").stdout
    both = gc(project, "--workspace", "--all-commits")
    assert both.returncode == 2 and "--workspace" in both.stderr and all(p.exists() for p in old)


def test_gc_without_a_terminal_and_without_yes_refuses_and_deletes_nothing(project: Project) -> None:
    old = two_commits(project)
    before = project.cache_objects()
    refused = gc(project, "--workspace")
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), refused
    assert "--yes" in lines[0] and f"{len(old)} object(s)" in lines[0] and "Traceback" not in refused.stderr
    assert project.cache_objects() == before
    dry = gc(project, "--workspace", "--dry-run")  # a dry run never asks
    assert dry.returncode == 0 and f"would remove {len(old)} object(s)" in dry.stdout
    assert project.cache_objects() == before


def test_gc_on_a_terminal_asks_and_no_keeps_everything(project: Project) -> None:
    old = two_commits(project)
    before = project.cache_objects()
    declined = gc_on_terminal(project, "n", "--workspace")
    assert declined.returncode == 0, declined
    assert f"remove {len(old)} object(s)" in declined.stdout and "the cache? [y/N]" in declined.stdout
    assert "nothing removed from the cache" in declined.stdout
    assert project.cache_objects() == before
    accepted = gc_on_terminal(project, "y", "--workspace")
    assert accepted.returncode == 0 and f"removed {len(old)} object(s)" in accepted.stdout, accepted
    assert not any(p.exists() for p in old) and len(project.cache_objects()) == len(before) - len(old)


def test_remote_gc_keeps_history_by_default_and_asks_before_deleting(project: Project, tmp_path: Path) -> None:
    folder = tmp_path / "remote"
    project.pivot("remote", "add", "store", str(folder), "--default")
    old = two_commits(project)
    project.git("checkout", "-q", "HEAD~1")
    project.pivot("checkout", "--force")
    project.pivot("push")
    project.git("checkout", "-q", "main")
    project.pivot("checkout", "--force")
    project.pivot("push")

    def remote_objects() -> list[Path]:
        return sorted(p for p in (folder / "files").rglob("*") if p.is_file())

    everything = remote_objects()
    assert {p.name for p in old} <= {p.name for p in everything}
    assert "removed 0 object(s)" in gc(project, "-r", "store", "--min-age", "0", "--yes").stdout
    refused = gc(project, "-r", "store", "--workspace", "--min-age", "0")
    assert refused.returncode == 1 and "--yes" in refused.stderr and remote_objects() == everything
    declined = gc_on_terminal(project, "n", "-r", "store", "--workspace", "--min-age", "0")
    assert "remote 'store'? [y/N]" in declined.stdout and remote_objects() == everything
    accepted = gc_on_terminal(project, "y", "-r", "store", "--workspace", "--min-age", "0")
    assert f"removed {len(old)} object(s)" in accepted.stdout, accepted
    assert len(remote_objects()) == len(everything) - len(old)
