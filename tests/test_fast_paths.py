"""The shortcuts of a no-op status and run (docs/performance.md): parsed lock files remembered by
their file's stat, and what invalidates them. Each test changes one thing a full check would
see and requires `pivot status` to see it too."""

from __future__ import annotations

import marshal
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xxhash
from conftest import Project

from pivot import lock as lockfile

TWO = '''
from pivot import stage


@stage(deps=["data/raw.txt"], outs=["data/upper.txt"])
def upper():
    open("data/upper.txt", "w").write(open("data/raw.txt").read().upper())


@stage(deps=["data/upper.txt"], outs=["data/final.txt"])
def final():
    open("data/final.txt", "w").write(open("data/upper.txt").read() + "!")
'''


def remembered(project: Project) -> set[str]:
    """The stages whose parsed lock the state database remembers by the lock file's stat."""
    db = sqlite3.connect(project.root / ".pivot" / "state.db")
    try:
        return {k.split(":", 1)[1] for (k,) in db.execute("SELECT key FROM kv WHERE key LIKE 'stat-lock%'")}
    finally:
        db.close()


def up_to_date(project: Project) -> Project:
    """A run two-stage project whose lock files are old enough to be remembered by stat."""
    project.write("data/raw.txt", "hello\n")
    project.pipeline(TWO)
    project.pivot("run")
    time.sleep(2.1)  # a lock younger than 2 s is never remembered by its stat
    assert "all 2 stage(s) up to date" in project.pivot("status").stdout
    assert remembered(project) == {"upper", "final"}
    return project


def test_a_lock_edited_in_place_keeping_size_and_mtime_is_read_again(project: Project) -> None:
    up_to_date(project)
    path = project.root / ".pivot" / "stages" / "final.lock"
    st = os.stat(path)
    text = path.read_text()
    locked = text.split("hash: ")[1][:32]  # the dep's hash: replaced by another of the same length
    with open(path, "r+") as f:  # in place: same inode, same size
        f.write(text.replace(locked, "a" * 32, 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime: only the ctime moved
    assert (os.stat(path).st_size, os.stat(path).st_mtime_ns, os.stat(path).st_ino) == \
        (st.st_size, st.st_mtime_ns, st.st_ino)
    out = project.pivot("status", "--explain").stdout
    assert "final: stale" in out and "dep 'data/upper.txt' changed" in out, out


def test_a_lock_restored_by_git_checkout_is_read_again(project: Project) -> None:
    project.write("data/raw.txt", "hello\n")
    project.pipeline(TWO)
    project.pivot("run")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "v1")
    project.write("data/raw.txt", "bye\n")
    project.pivot("run")  # v2 locks, not committed
    time.sleep(2.1)
    assert "all 2 stage(s) up to date" in project.pivot("status").stdout
    assert remembered(project) == {"upper", "final"}
    project.git("checkout", "--", ".pivot/stages")  # the v1 lock files again
    out = project.pivot("status", "--explain").stdout
    assert "upper: stale" in out and "dep 'data/raw.txt' changed" in out, out
    assert "final: stale" in out


def test_a_deleted_lock_counts_as_never_run(project: Project) -> None:
    up_to_date(project)
    (project.root / ".pivot" / "stages" / "upper.lock").unlink()
    out = project.pivot("status", "--explain").stdout
    assert "upper: stale" in out and "never run: no lock file" in out, out


def test_a_lock_too_recent_to_trust_is_checked_by_its_bytes(project: Project) -> None:
    """A row remembered while its file's stat was racy is not proof by stat: a matching stat is
    confirmed by the hash of the file's bytes. The row is made to hold another lock under the
    file's stat: read by stat alone, 'final' would look up to date."""
    project.write("data/raw.txt", "hello\n")
    project.pipeline(TWO)
    project.pivot("run")
    path = project.root / ".pivot" / "stages" / "final.lock"
    ahead = time.time_ns() + 3600 * 10**9  # an mtime later than the status: racy for an hour
    os.utime(path, ns=(ahead, ahead))
    assert "all 2 stage(s) up to date" in project.pivot("status").stdout
    assert remembered(project) == {"upper", "final"}
    text = path.read_text()
    locked = text.split("hash: ")[1][:32]  # final's dep: the lock now says another version of it
    st = os.stat(path)
    with open(path, "r+") as f:
        f.write(text.replace(locked, "b" * 32, 1))
    os.utime(path, ns=(st.st_atime_ns, ahead))
    _restamp_row(project, "final", path)  # the row claims the edited file's stat, keeps the old lock
    out = project.pivot("status", "--explain").stdout
    assert "final: stale" in out and "dep 'data/upper.txt' changed" in out, out


def _restamp_row(project: Project, stage: str, path: Path) -> None:
    """Give stage's memo row the current stat of its lock file, keeping everything else the row
    remembers (when it was taken, the hash of the bytes then, the lock): as if the file had been
    rewritten within the timestamp granularity after the row was taken."""
    db = sqlite3.connect(project.root / ".pivot" / "state.db")
    try:
        key = lockfile.STAT_MEMO + stage
        (row,) = db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        st = os.stat(path)
        payload = marshal.dumps(((st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino),
                                 *marshal.loads(row[8:])[1:]))
        db.execute("UPDATE kv SET value = ? WHERE key = ?", (xxhash.xxh3_64_digest(payload) + payload, key))
        db.commit()
    finally:
        db.close()


def test_an_unreadable_lock_is_not_hidden_by_its_memo(project: Project) -> None:
    up_to_date(project)
    path = project.root / ".pivot" / "stages" / "upper.lock"
    path.write_text("schema: [unclosed\n")
    out = project.pivot("status", "--explain").stdout
    assert "upper: stale" in out and "is unreadable" in out, out


def test_status_and_verify_agree_after_the_memo_serves(project: Project) -> None:
    up_to_date(project)
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "v1")
    assert "all 2 stage(s) match" in project.pivot("verify").stdout
    project.write("data/raw.txt", "changed\n")
    proc = project.pivot("verify", check=False)
    assert "upper: stale" in proc.stdout and "dep 'data/raw.txt' changed" in proc.stdout, proc.stdout
    proc = subprocess.run(["git", "status", "--porcelain"], cwd=project.root, capture_output=True, text=True)
    assert "data/raw.txt" in proc.stdout


# -- the file memo is keyed by the ctime too: a same-size edit whose mtime is set back --------

LONG_AGO = time.time_ns() - 3600 * 10**9  # an mtime that a hash taken now trusts


def edit_keeping_mtime(path: os.PathLike[str], content: str) -> None:
    """Rewrite `path` in place with content of the same size, and set its mtime back (as `cp -p`,
    `touch -d` or rsync -t do): size, mtime and inode are those the memo remembers."""
    before = os.stat(path)
    assert len(content.encode()) == before.st_size
    with open(path, "r+") as f:
        f.write(content)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)


def test_a_dep_edited_to_the_same_size_and_mtime_is_seen(project: Project) -> None:
    project.write("data/raw.txt", "hello\n")
    os.utime(project.root / "data/raw.txt", ns=(LONG_AGO, LONG_AGO))
    project.pipeline(TWO)
    project.pivot("run")
    assert "all 2 stage(s) up to date" in project.pivot("status").stdout
    edit_keeping_mtime(project.root / "data/raw.txt", "jello\n")
    out = project.pivot("status", "--explain").stdout
    assert "upper: stale" in out and "dep 'data/raw.txt' changed" in out, out
    project.pivot("run")
    assert project.read("data/final.txt") == "JELLO\n!"
    assert "all 2 stage(s) up to date" in project.pivot("status").stdout


DIR_DEP = '''
from pivot import stage


@stage(deps=["data/in"], outs=["data/count.txt"])
def count():
    import os
    text = "".join(open(os.path.join("data/in", n)).read() for n in sorted(os.listdir("data/in")))
    open("data/count.txt", "w").write(text.upper())
'''


def test_a_file_in_a_directory_dep_edited_to_the_same_size_and_mtime_is_seen(project: Project) -> None:
    for i in range(3):
        project.write(f"data/in/{i}.txt", f"part {i}\n")
        os.utime(project.root / f"data/in/{i}.txt", ns=(LONG_AGO, LONG_AGO))
    project.pipeline(DIR_DEP)
    project.pivot("run")
    time.sleep(2.1)  # past the racy window of every ctime: only the memo's key can see the edit
    assert "all 1 stage(s) up to date" in project.pivot("status").stdout
    edit_keeping_mtime(project.root / "data/in/1.txt", "PART 1\n")
    out = project.pivot("status", "--explain").stdout
    assert "count: stale" in out and "dep 'data/in' changed" in out, out
    project.pivot("run")
    assert project.read("data/count.txt") == "PART 0\nPART 1\nPART 2\n"
    assert "all 1 stage(s) up to date" in project.pivot("status").stdout


def test_a_state_db_of_schema_1_is_upgraded_forgetting_hashes_without_ctime(project: Project) -> None:
    """A hash row written before the ctime was part of its key cannot vouch for a file: the
    upgrade forgets such rows (and folder memos) silently and keeps the other values."""
    up_to_date(project)
    raw = os.stat(project.root / "data/raw.txt")
    db = sqlite3.connect(project.root / ".pivot" / "state.db")
    try:  # what schema 1 wrote: a row matching raw.txt's stat, here with a wrong hash
        db.execute("DROP TABLE hashes")
        db.execute("CREATE TABLE hashes (path TEXT PRIMARY KEY, size INTEGER, mtime INTEGER,"
                   " inode INTEGER, checked INTEGER, hash TEXT)")
        db.execute("INSERT INTO hashes VALUES (?,?,?,?,?,?)", ("data/raw.txt", raw.st_size, raw.st_mtime_ns,
                                                                raw.st_ino, time.time_ns(), "0" * 32))
        db.execute("INSERT OR REPLACE INTO kv VALUES ('kept-by-upgrade', '1')")
        db.execute("PRAGMA user_version=1")
        db.commit()
    finally:
        db.close()
    done = project.pivot("status")
    assert "all 2 stage(s) up to date" in done.stdout and "warning" not in done.stderr, done.stderr
    db = sqlite3.connect(project.root / ".pivot" / "state.db")
    try:
        assert db.execute("SELECT value FROM kv WHERE key='kept-by-upgrade'").fetchall() == [("1",)]
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    finally:
        db.close()


def test_records_built_on_the_fast_path_have_every_field(project: Project) -> None:
    """The no-op plan builds its Current, the locks it reads from the memo, and @stage its Stage
    records, without their __init__ (records.assemble): each must still carry exactly its
    dataclass's fields, and equal what __init__ makes from the same values."""
    up_to_date(project)
    script = (
        "import dataclasses, json; from pivot.repo import Repo; from pivot.lock import StageLock;"
        "from pivot.status import Current; r = Repo.load(); p = r.prepare('final'); lock = r.read_lock('final');"
        "names = lambda c: sorted(f.name for f in dataclasses.fields(c));"
        "print(json.dumps([sorted(vars(p.current)) == names(Current), sorted(vars(lock)) == names(StageLock),"
        " all(sorted(vars(x)) == names(type(x)) for x in (*lock.deps, *lock.outs)),"
        " Current(**vars(p.current)) == p.current, StageLock(**vars(lock)) == lock,"
        " sorted(vars(p.stage)) == names(type(p.stage)), type(p.stage)(**vars(p.stage)) == p.stage]))")
    out = subprocess.run([sys.executable, "-c", script], cwd=project.root, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[true, true, true, true, true, true, true]", out.stdout + out.stderr


def test_a_plans_steady_view_of_files_ends_with_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a plan a file is stat-ed once (a chain's output is the next stage's dep); after it,
    every look stats the file again, so a run sees what its stages wrote."""
    from pivot.hashing import Hasher
    from pivot.state import State

    monkeypatch.setattr("pivot.hashing.RACY_NS", 0)  # trust a hash at once (the 2 s rule is tested above)
    (tmp_path / "a.txt").write_text("one")
    state = State(tmp_path / "state.db")
    hasher = Hasher(tmp_path, state)
    hasher.hash_path("a.txt")  # hashed and remembered
    with hasher.steady():
        seen = hasher.hash_path("a.txt")  # trusted from the memo
        (tmp_path / "a.txt").write_text("two")
        assert hasher.hash_path("a.txt") == seen  # the plan's one moment
    after = hasher.hash_path("a.txt")
    state.close()
    assert seen is not None and after is not None and after.hash != seen.hash
