"""Derived data that is damaged or left behind is recovered, not refused.

- An unreadable lock file (any content) makes its stage stale: `status` names the file and
  exits 0, `pivot run` (forced or not) runs the stage and rewrites the lock with one warning,
  `pivot verify` fails naming the file.
- A lock file whose stage left the pipeline (an orphan) is reported by `status` and `verify`
  and removed by `pivot run` (not by a dry run, and never a lock of a stage merely not selected).
- An unreadable state database (.pivot/state.db) is rebuilt with one warning naming it.
- `pivot logs` of an unknown stage says the stage is unknown.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import Project
from test_errors import CORRUPT_LOCKS, _build_ran, assert_one_error_line, cloned, refused

# Every kind of unreadable lock: bad YAML, bad UTF-8, the wrong shape, a duplicate key, binary.
UNREADABLE = {
    **CORRUPT_LOCKS,
    "invalid UTF-8": b"schema: 1\ncode: {fingerprint: \xff\xfe}\n",
    "duplicate key": b"schema: 1\nschema: 1\n",
    "binary": bytes(range(256)) * 4,
}
LOCK = ".pivot/stages/upper.lock"


@pytest.fixture
def ran(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Project:
    """upper -> count, run once (the template of test_errors)."""
    return cloned("ran", _build_ran, tmp_path_factory, tmp_path / "proj")


def _damage(project: Project, content: bytes) -> str:
    """Replace upper's lock with `content`; returns the good lock's text."""
    good = project.lock("upper")
    (project.root / LOCK).write_bytes(content)
    return good


# -- unreadable lock files ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_status_names_an_unreadable_lock_and_calls_the_stage_stale(ran: Project, name: str) -> None:
    _damage(ran, UNREADABLE[name])
    proc = ran.pivot("status")  # exit 0, like any stale stage
    assert proc.stderr == ""
    line = next(line for line in proc.stdout.splitlines() if line.startswith("upper:"))
    assert line.startswith(f"upper: stale (lock file {LOCK} is unreadable (")
    assert line.endswith("; it will be rewritten)"), line
    data = json.loads(ran.pivot("status", "--json").stdout)
    upper = next(s for s in data if s["stage"] == "upper")
    assert upper["stale"] and LOCK in upper["reasons"][0]


@pytest.mark.parametrize("args", [("run",), ("run", "--force", "upper"), ("run", "upper")])
def test_run_rewrites_an_unreadable_lock_with_one_warning(ran: Project, args: tuple[str, ...]) -> None:
    good = _damage(ran, UNREADABLE["duplicate key"])
    proc = ran.pivot(*args)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and LOCK in warnings[0] and "line 2" in warnings[0], proc.stderr
    assert "upper: running" in proc.stdout
    assert ran.lock("upper") == good  # rewritten, byte for byte what the run writes
    assert "all 2 stage(s) up to date" in ran.pivot("status").stdout
    assert ran.pivot("run").stderr == ""  # the warning is not repeated once the lock is good


def test_run_rewrites_an_unreadable_lock_of_a_stage_downstream(ran: Project) -> None:
    """upper is stale (its code changed) and count's lock is garbage: both run, count's lock is
    rewritten, nothing is refused half way."""
    from test_errors import GOOD

    ran.pipeline(GOOD.replace(".upper())", ".upper().strip())"))
    (ran.root / ".pivot/stages/count.lock").write_bytes(CORRUPT_LOCKS["yaml-syntax"])
    proc = ran.pivot("run")
    assert "count.lock" in proc.stderr and "upper: running" in proc.stdout and "count: running" in proc.stdout
    assert ran.lock("count").startswith("code:")
    assert ran.read("data/count.txt") == "5"


def test_a_dry_run_leaves_an_unreadable_lock_as_it_is(ran: Project) -> None:
    _damage(ran, UNREADABLE["a-list"])
    proc = ran.pivot("run", "--dry-run")
    assert "upper: would run" in proc.stdout and LOCK in proc.stdout
    assert (ran.root / LOCK).read_bytes() == UNREADABLE["a-list"]


@pytest.mark.parametrize("name", ["yaml-syntax", "wrong-shape", "invalid UTF-8"])
def test_verify_fails_on_an_unreadable_lock_naming_it(ran: Project, name: str) -> None:
    _damage(ran, UNREADABLE[name])
    proc = ran.pivot("verify", check=False)
    assert proc.returncode == 1
    assert f"lock file {LOCK} is unreadable" in proc.stdout and "fix: pivot run upper" in proc.stdout
    report = json.loads(ran.pivot("verify", "--json", check=False).stdout)
    assert not report["ok"] and LOCK in report["stale"][0]["reasons"][0]


def test_checkout_still_refuses_an_unreadable_lock(ran: Project) -> None:
    """Checkout restores what a lock says: with no readable lock it has nothing honest to do."""
    _damage(ran, UNREADABLE["wrong-shape"])
    refused(ran, "checkout", names=("upper.lock",))


# -- orphan lock files ---------------------------------------------------------------------------

RENAMED = '''
from pivot import stage

@stage(deps=["data/raw.txt"], outs=["data/upper.txt"])
def shout():
    open("data/upper.txt", "w").write(open("data/raw.txt").read().upper())

@stage(deps=["data/upper.txt"], outs=["data/count.txt"])
def count():
    open("data/count.txt", "w").write(str(len(open("data/upper.txt").read())))
'''

ORPHAN = "orphan lock .pivot/stages/upper.lock: no stage 'upper' in the pipeline; 'pivot run' removes it"


def test_status_reports_an_orphan_lock(ran: Project) -> None:
    ran.pipeline(RENAMED)
    proc = ran.pivot("status")
    assert ORPHAN in proc.stdout.splitlines(), proc.stdout
    data = json.loads(ran.pivot("status", "--json").stdout)
    orphans = [s for s in data if s.get("orphan_lock")]
    assert orphans == [{"stage": "upper", "orphan_lock": LOCK, "stale": False, "restore": [], "notes": [],
                        "reasons": ["no stage 'upper' in the pipeline; 'pivot run' removes it"]}]
    assert ran.exists(LOCK)  # status changes nothing


def test_verify_reports_an_orphan_lock_with_its_fix(ran: Project) -> None:
    ran.pipeline(RENAMED)
    ran.pivot("run")  # shout runs (it has no lock), upper's lock is removed...
    (ran.root / LOCK).write_text(ran.lock("shout"))  # ...and comes back, as from a merge
    proc = ran.pivot("verify", check=False)
    assert_one_error_line(proc, "orphan lock")
    assert f"{LOCK}: orphan lock: no stage 'upper' in the pipeline" in proc.stdout
    assert "fix: pivot run (removes it)" in proc.stdout
    report = json.loads(ran.pivot("verify", "--json", check=False).stdout)
    assert not report["ok"] and [o["path"] for o in report["orphan_locks"]] == [LOCK]


def test_run_removes_orphan_locks_and_says_which(ran: Project) -> None:
    ran.pipeline(RENAMED)
    dry = ran.pivot("run", "--dry-run")
    assert f"would remove orphan lock {LOCK}" in dry.stdout and ran.exists(LOCK)  # a dry run removes nothing
    proc = ran.pivot("run", "count")  # orphans are the pipeline's, whatever is selected
    assert f"removed orphan lock {LOCK} (no stage 'upper' in the pipeline)" in proc.stdout
    assert not ran.exists(LOCK)
    assert ran.exists(".pivot/stages/count.lock") and ran.exists(".pivot/stages/shout.lock")
    assert "orphan" not in ran.pivot("status").stdout
    ran.pivot("verify")


def test_a_lock_of_a_stage_not_selected_is_not_an_orphan(ran: Project) -> None:
    proc = ran.pivot("run", "-s", "upper", "--force")
    assert "orphan" not in proc.stdout
    assert ran.exists(".pivot/stages/count.lock")
    assert "orphan" not in ran.pivot("status", "upper").stdout


# -- the state database --------------------------------------------------------------------------


def _truncated(db: bytes) -> bytes:
    return db[:len(db) // 2]


def _garbage_after_header(db: bytes) -> bytes:
    return db[:100] + bytes(range(256)) * 40


STATE_DAMAGE = {
    "random bytes": lambda db: os.urandom(8192),
    "a truncated real db": _truncated,
    "an empty file": lambda db: b"",
    "garbage after a valid header": _garbage_after_header,
}
STATE = ".pivot/state.db"


def _checkpointed_state(project: Project) -> bytes:
    """The state database's bytes, with its write-ahead log folded in and removed."""
    import sqlite3

    db = sqlite3.connect(project.root / STATE)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    for suffix in ("-wal", "-shm"):
        (project.root / (STATE + suffix)).unlink(missing_ok=True)
    return (project.root / STATE).read_bytes()


@pytest.mark.parametrize("name", sorted(STATE_DAMAGE))
@pytest.mark.parametrize("command", ["status", "run"])
def test_an_unreadable_state_db_is_rebuilt(ran: Project, name: str, command: str) -> None:
    good = _checkpointed_state(ran)
    assert len(good) > 4096
    (ran.root / STATE).write_bytes(STATE_DAMAGE[name](good))
    proc = ran.pivot(command)
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr, proc.stderr
    warnings = proc.stderr.strip().splitlines()
    if name != "an empty file":  # sqlite reads an empty file as a new database: nothing to say
        assert len(warnings) == 1 and warnings[0].startswith(f"warning: {STATE} was unreadable"), proc.stderr
    assert "up to date" in proc.stdout
    again = ran.pivot(command)
    assert again.stderr == "" and "up to date" in again.stdout


def test_a_folder_in_place_of_the_state_db_is_replaced(ran: Project) -> None:
    _checkpointed_state(ran)
    (ran.root / STATE).unlink()
    (ran.root / STATE).mkdir()
    (ran.root / STATE / "junk").write_text("x")
    proc = ran.pivot("status")
    assert proc.stderr.startswith(f"warning: {STATE} was unreadable") and len(proc.stderr.splitlines()) == 1
    assert (ran.root / STATE).is_file()


@pytest.mark.parametrize("future", ["newer schema version", "tables of another shape"])
def test_a_state_db_from_another_version_is_rebuilt(ran: Project, future: str) -> None:
    import sqlite3

    _checkpointed_state(ran)
    db = sqlite3.connect(ran.root / STATE)
    if future == "newer schema version":
        db.execute("PRAGMA user_version=99")
    else:
        db.execute("DROP TABLE hashes")
        db.execute("CREATE TABLE hashes (path TEXT, digest BLOB)")
    db.commit()
    db.close()
    proc = ran.pivot("run")
    assert proc.stderr.startswith(f"warning: {STATE} was unreadable") and len(proc.stderr.splitlines()) == 1
    assert "nothing to run" in proc.stdout
    assert ran.pivot("status").stderr == ""


# -- pivot logs ------------------------------------------------------------------------------------


def test_logs_of_an_unknown_stage_says_it_is_unknown(ran: Project) -> None:
    line = refused(ran, "logs", "nosuch", names=("unknown stage 'nosuch'", "pivot list"))
    assert "log" not in line.replace("pivot list", "")


def test_logs_of_a_stage_that_has_not_run_here_says_so(ran: Project) -> None:
    shutil.rmtree(ran.root / ".pivot/logs")
    refused(ran, "logs", "upper", names=("no log for stage 'upper'", "has not run on this machine"))
