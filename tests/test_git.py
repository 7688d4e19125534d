"""Reading history through pygit2 (never by checking out), and `pivot status --rev`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import Project

from pivot import git as pgit
from pivot import history as phist
from pivot.errors import GitError

PIPELINE = '''
from pydantic import BaseModel
from pivot import Metric, stage


class Params(BaseModel):
    factor: int = 2


@stage(deps=["data/raw.txt"], outs=["data/big.txt", Metric("metrics.json")], params=Params)
def grow(params: Params):
    text = open("data/raw.txt").read()
    open("data/big.txt", "w").write(text * params.factor)
    open("metrics.json", "w").write('{"size": %d}\\n' % (len(text) * params.factor))


@stage(deps=["data/big.txt"], outs=["data/count.txt"])
def count():
    open("data/count.txt", "w").write(str(len(open("data/big.txt").read())))
'''


def commit_all(project: Project, message: str) -> str:
    project.git("add", "-A")
    project.git("commit", "-q", "-m", message)
    return project.git("rev-parse", "HEAD").strip()


@pytest.fixture
def history(project: Project) -> Project:
    """Two commits: factor 2 then factor 3 (params.yaml), each run and committed; branch `old` at the first."""
    project.write("data/raw.txt", "ab\n")
    project.pipeline(PIPELINE)
    project.pivot("run")
    commit_all(project, "factor 2")
    project.git("branch", "old")
    project.write("params.yaml", "grow:\n  factor: 3\n")
    project.pivot("run")
    commit_all(project, "factor 3")
    return project


def test_read_blob_at_revisions_without_touching_the_work_tree(history: Project) -> None:
    root = history.root
    before = history.git("status", "--porcelain")
    assert pgit.read_blob(root, "HEAD", "metrics.json") == b'{"size": 9}\n'
    assert pgit.read_blob(root, "old", "metrics.json") == b'{"size": 6}\n'
    assert pgit.read_blob(root, "HEAD~1", "params.yaml") is None  # absent there
    assert pgit.read_blob(root, "HEAD", "params.yaml") == b"grow:\n  factor: 3\n"
    assert pgit.read_blob(root, "HEAD", "data") is None  # a folder is not a blob
    assert history.git("status", "--porcelain") == before
    assert history.read("metrics.json") == '{"size": 9}\n'


def test_locks_at_a_revision(history: Project) -> None:
    old = phist.locks_at(history.root, "old")
    new = phist.locks_at(history.root, "HEAD")
    assert set(old) == set(new) == {"grow", "count"}
    assert old["grow"].params == {"factor": 2} and new["grow"].params == {"factor": 3}
    big_old = next(r for r in old["grow"].outs if r.path == "data/big.txt")
    big_new = next(r for r in new["grow"].outs if r.path == "data/big.txt")
    assert big_old.hash != big_new.hash and big_old.kind == "out"
    assert old["count"].fingerprint == new["count"].fingerprint


def test_unknown_revision_is_a_clear_error(history: Project) -> None:
    with pytest.raises(GitError, match="unknown git revision 'nope'"):
        pgit.read_blob(history.root, "nope", "metrics.json")
    proc = history.pivot("status", "--rev", "nope", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: unknown git revision 'nope'") and "Traceback" not in proc.stderr


def test_revisions(history: Project) -> None:
    head = history.git("rev-parse", "HEAD").strip()
    first = history.git("rev-parse", "old").strip()
    assert pgit.revisions(history.root) == [head]
    history.git("checkout", "-q", "-b", "side", "old")
    (history.root / "side.txt").write_text("s")
    side = commit_all(history, "side")
    history.git("checkout", "-q", "main")
    branches = pgit.revisions(history.root, all_branches=True)
    assert branches[0] == head and sorted(branches) == sorted({head, first, side})
    assert set(pgit.revisions(history.root, all_commits=True)) == {head, first, side}
    history.git("tag", "v1", first)
    history.git("branch", "-D", "old")
    assert first in pgit.revisions(history.root, all_commits=True)  # still reachable


def test_project_in_a_subfolder_and_a_linked_worktree(tmp_path: Path) -> None:
    top = tmp_path / "mono"
    (top / "ml").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(top)], check=True)
    p = Project(top / "ml")
    p.pivot("init")
    p.write("data/raw.txt", "xy\n")
    p.pipeline(PIPELINE)
    p.pivot("run")
    commit_all(p, "one")
    assert pgit.read_blob(p.root, "HEAD", "metrics.json") == b'{"size": 6}\n'
    assert set(phist.locks_at(p.root, "HEAD")) == {"grow", "count"}

    wt = tmp_path / "wt"
    p.git("worktree", "add", "-q", str(wt), "-b", "wt")
    (wt / "ml" / "params.yaml").write_text("grow:\n  factor: 5\n")
    subprocess.run(["git", "add", "-A"], cwd=wt, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "wt"], cwd=wt, check=True)
    assert pgit.read_blob(wt / "ml", "HEAD", "params.yaml") == b"grow:\n  factor: 5\n"
    assert pgit.read_blob(p.root, "HEAD", "params.yaml") is None  # the main work tree's HEAD
    assert pgit.read_blob(p.root, "wt", "params.yaml") == b"grow:\n  factor: 5\n"


def test_push_refs_and_the_objects_commits_need(history: Project, tmp_path: Path) -> None:
    head = history.git("rev-parse", "HEAD").strip()
    first = history.git("rev-parse", "old").strip()
    updates = pgit.parse_push_refs(f"refs/heads/main {head} refs/heads/main {'0' * 40}\n"
                                   f"(delete) {'0' * 40} refs/heads/gone {first}\n")
    assert [u.creates for u in updates] == [True, False] and updates[1].deletes
    with pytest.raises(GitError, match="unexpected line"):
        pgit.parse_push_refs("garbage\n")
    with phist.History(history.root) as h:
        assert h.commits_to_push(updates, "origin") == [head, first]
        assert h.commits_to_push(pgit.parse_push_refs(f"refs/heads/main {head} refs/heads/main {first}\n"),
                                 "origin") == [head]
        needed = h.outputs_needed([head, first])
    locks = {**{f"old:{r.hash}": r for lock in phist.locks_at(history.root, "old").values() for r in lock.outs},
             **{f"new:{r.hash}": r for lock in phist.locks_at(history.root, "HEAD").values() for r in lock.outs}}
    cached = {r.hash for r in locks.values() if r.kind != "metric"}
    assert set(needed) == cached  # every cached output of both commits, and no metric
    assert {n.path for n in needed.values()} == {"data/big.txt", "data/count.txt"}
    old_big = next(r.hash for k, r in locks.items() if k.startswith("old:") and r.path == "data/big.txt")
    assert needed[old_big].commit == first


def test_status_rev_compares_the_workspace_with_locks_at_rev(history: Project) -> None:
    assert "all 2 stage(s) match the lock files at HEAD" in history.pivot("status", "--rev", "HEAD").stdout
    out = history.pivot("status", "--rev", "old", "--explain").stdout
    assert "grow: differs from old" in out and "param factor: 2 -> 3" in out
    assert "count: differs from old" in out and "dep 'data/big.txt' changed" in out
    assert "2 of 2 stage(s) differ from old" in out
    data = json.loads(history.pivot("status", "--rev", "old", "--json").stdout)
    assert data["rev"] == "old" and data["commit"] == history.git("rev-parse", "old").strip()
    assert {s["stage"]: s["differs"] for s in data["stages"]} == {"grow": True, "count": True}
    # status --rev never changes the workspace or HEAD
    assert history.git("rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert history.read("metrics.json") == '{"size": 9}\n'


def test_status_rev_names_stages_new_or_gone_since_rev(history: Project) -> None:
    history.pipeline(PIPELINE.replace("def count():", "def tally():").replace('"data/count.txt"', '"data/tally.txt"'))
    history.pivot("run")
    out = history.pivot("status", "--rev", "HEAD").stdout
    assert "tally: differs from HEAD (no lock file at HEAD" in out
    assert "count: has a lock file at HEAD but is no longer in the pipeline" in out


def test_help_does_not_import_pygit2() -> None:
    code = textwrap.dedent("""
        import sys
        from pivot.cli.main import cli, COMMANDS
        for name in ("hooks", "verify", "status"):
            cli.get_command(None, name)
        import pivot.hooks, pivot.verify, pivot.git
        print("pygit2" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
