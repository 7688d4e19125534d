"""Ctrl-C, kill -9 and a second `pivot run` while one is running: nothing half-written is kept.

The stage under test writes part of its output, creates a marker file and then waits for a
`release` file that (in the interrupt tests) never comes; the test polls for the marker, so no
fixed sleeps. Every `pivot` process is started in its own session, so a signal can go to the whole
process group, as a terminal's Ctrl-C does, and any worker processes die with it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
import xxhash
import yaml
from conftest import PIVOT, Project, make_git_repo

# -- helpers -------------------------------------------------------------------------------


def pipeline_text(early: str = "v1", slow: str = "v1", write_first: bool = True) -> str:
    """early -> slow (a file and a folder, held at the `hold` file), and an unrelated stage.
    `write_first`: slow writes part of its outputs before it signals readiness and waits."""
    partial = '''
    with open("data/slow.txt", "w") as f:
        f.write("partial SLOW")
    os.makedirs("data/slowdir", exist_ok=True)
    with open("data/slowdir/a.txt", "w") as f:
        f.write("a SLOW")
'''
    return f'''
import os
import time

from pivot import Metric, stage


def _hold():
    if os.path.exists("hold"):
        open("ready", "w").close()
        deadline = time.time() + 60
        while not os.path.exists("release") and time.time() < deadline:
            time.sleep(0.02)


@stage(deps=["data/raw.txt"], outs=["data/early.txt"])
def early():
    with open("data/early.txt", "w") as f:
        f.write("early EARLY")


@stage(deps=["data/early.txt"], outs=["data/slow.txt", "data/slowdir", Metric("slow.json")])
def slow():
{partial if write_first else ""}
    _hold()
{"" if write_first else partial}
    with open("data/slow.txt", "a") as f:
        f.write(" complete")
    with open("slow.json", "w") as f:
        f.write('{{"version": "SLOW"}}')


@stage(deps=["data/raw.txt"], outs=["data/other.txt"])
def other():
    with open("data/other.txt", "w") as f:
        f.write("other")
'''.replace("EARLY", early).replace("SLOW", slow)


def start(project: Project, *args: str, to_files: bool = False) -> subprocess.Popen[str]:
    """Start `pivot ARGS` in a new session (its own process group). to_files: its output goes to
    files next to the project rather than pipes, for when other processes may keep pipes open."""
    if to_files:
        with open(project.root.parent / "pivot.stdout", "w") as out, \
                open(project.root.parent / "pivot.stderr", "w") as err:
            return subprocess.Popen([PIVOT, *args], cwd=project.root, stdout=out, stderr=err, text=True,
                                    start_new_session=True)
    return subprocess.Popen([PIVOT, *args], cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def live_group_members(pgid: int) -> list[str]:
    """Processes of a process group that are still running (zombies left out), with their command."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(f"{entry}: {cmd.strip()}")
    return found


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started. At the end each one's process group (its own session: only what
    it started) is killed, and so is any process of that group still working in this test's
    folder once the pivot process itself is gone (a worker that outlived it)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:  # not reaped, so its pid (and group id) cannot have been reused
            os.killpg(p.pid, signal.SIGKILL)
        for member in live_group_members(p.pid):
            pid = int(member.split(":")[0])
            try:
                if os.readlink(f"/proc/{pid}/cwd").startswith(str(tmp_path)):
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        p.communicate(timeout=30)


def wait_for(marker: Path, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"pivot exited {proc.returncode} before {marker.name} appeared\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker.name} did not appear within {timeout}s")
        time.sleep(0.01)


def send(proc: subprocess.Popen[str], sig: int, to: str) -> None:
    if to == "group":  # what a terminal does on Ctrl-C
        os.killpg(proc.pid, sig)
    else:  # kill -INT <pid> of the pivot process alone
        proc.send_signal(sig)


def events(proc: subprocess.CompletedProcess[str]) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def started_stages(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [e["stage"] for e in events(proc) if e.get("event") == "running"]


def assert_cache_sound(project: Project) -> None:
    """Every cache object's bytes hash to its name, and no temporary file is left in the cache."""
    for obj in project.cache_objects():
        name = obj.parent.name + obj.name
        assert xxhash.xxh3_128_hexdigest(obj.read_bytes()) == name, f"cache object {obj} is not what its name says"
    tmp = project.root / ".pivot" / "cache" / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir()), f"left in {tmp}: {list(tmp.iterdir())}"


def workspace_files(project: Project) -> set[str]:
    """Files outside .git/ and .pivot/, as POSIX paths (Python's __pycache__ left out)."""
    found = set()
    for folder, dirs, files in os.walk(project.root):
        rel = os.path.relpath(folder, project.root).replace(os.sep, "/")
        if rel == ".":
            dirs[:] = [d for d in dirs if d not in (".git", ".pivot")]
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found.update(f if rel == "." else f"{rel}/{f}" for f in files)
    return found


def read_tree(project: Project, rel: str) -> dict[str, bytes]:
    base = project.root / rel
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def assert_locks_match_workspace(project: Project) -> None:
    """Every locked file output is in the workspace with the locked hash, and status agrees."""
    for lock_path in sorted((project.root / ".pivot" / "stages").glob("*.lock")):
        data = yaml.safe_load(lock_path.read_text())
        for rec in data["outs"]:
            full = project.root / rec["path"]
            assert full.exists(), f"{lock_path.name}: {rec['path']} is missing"
            if not rec.get("dir"):
                assert xxhash.xxh3_128_hexdigest(full.read_bytes()) == rec["hash"], (
                    f"{lock_path.name}: {rec['path']} does not match its lock")
    status = project.pivot("status", "--json")
    stale = {s["stage"]: s["reasons"] for s in json.loads(status.stdout) if s["stale"]}
    assert stale == {}, f"stale after recovery: {stale}"


_TEMPLATE: list[Path] = []


@pytest.fixture
def done(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Project:
    """A project whose v1 pipeline ran once (built once per session, then copied)."""
    if not _TEMPLATE:
        root = tmp_path_factory.mktemp("interrupt-template") / "proj"
        make_git_repo(root)
        template = Project(root)
        template.pivot("init")
        template.write("data/raw.txt", "raw\n")
        template.pipeline(pipeline_text())
        template.pivot("run")
        assert template.read("data/slow.txt") == "partial v1 complete"
        _TEMPLATE.append(root)
    dest = tmp_path / "proj"
    shutil.copytree(_TEMPLATE[0], dest, symlinks=True)
    return Project(dest)


# -- Ctrl-C --------------------------------------------------------------------------------


@pytest.mark.parametrize("to", ["group", "pid"])
def test_ctrl_c_mid_stage_keeps_nothing_half_written(done: Project, procs: list, to: str) -> None:
    project = done
    before = {name: project.lock(name) for name in ("early", "slow", "other")}
    old_slow = project.read("data/slow.txt")
    old_dir = read_tree(project, "data/slowdir")
    old_metric = project.read("slow.json")
    files_before = workspace_files(project)

    # new code for early and slow; slow writes part of its outputs, then waits
    project.pipeline(pipeline_text(early="v2", slow="v2"))
    project.write("hold", "")
    proc = start(project, "run")
    procs.append(proc)
    wait_for(project.root / "ready", proc)
    assert project.read("data/slow.txt") == "partial v2"  # the partial output is really there
    sent = time.monotonic()
    send(proc, signal.SIGINT, to)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, f"exit {proc.returncode}\n{out}\n{err}"
    assert time.monotonic() - sent < 5, "pivot took too long to stop after Ctrl-C"
    assert "internal error" not in err, err
    if to == "pid":  # (with the whole group interrupted, see test_ctrl_c_prints_no_traceback)
        assert "Traceback" not in err, err

    # early finished before the interrupt and was locked; slow has no new lock; other untouched
    assert project.read("data/early.txt") == "early v2"
    assert project.lock("early") != before["early"]
    assert project.lock("slow") == before["slow"]
    assert project.lock("other") == before["other"]
    # slow's previous outputs are back, unchanged, and nothing else was left in the workspace
    assert project.read("data/slow.txt") == old_slow
    assert read_tree(project, "data/slowdir") == old_dir
    assert project.read("slow.json") == old_metric
    assert workspace_files(project) == files_before | {"hold", "ready"}
    assert_cache_sound(project)

    # the next run finishes the job: only the interrupted stage runs
    (project.root / "hold").unlink()
    proc2 = project.pivot("run", "--json")
    assert started_stages(proc2) == ["slow"], proc2.stdout
    assert project.read("data/slow.txt") == "partial v2 complete"
    assert project.read("slow.json") == '{"version": "v2"}'
    assert project.lock("slow") != before["slow"]
    assert_cache_sound(project)
    assert_locks_match_workspace(project)


def test_ctrl_c_on_the_first_run_leaves_no_lock_and_no_output(project: Project, procs: list) -> None:
    project.write("data/raw.txt", "raw\n")
    project.pipeline(pipeline_text())
    project.write("hold", "")
    proc = start(project, "run")
    procs.append(proc)
    wait_for(project.root / "ready", proc)
    send(proc, signal.SIGINT, "group")
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, f"exit {proc.returncode}\n{out}\n{err}"
    assert "internal error" not in err, err

    # early finished (slow needs it) and other may have finished alongside; slow has nothing
    locks = sorted(p.name for p in (project.root / ".pivot" / "stages").iterdir())
    assert locks in (["early.lock"], ["early.lock", "other.lock"]), locks
    assert project.exists("data/other.txt") == ("other.lock" in locks)
    for rel in ("data/slow.txt", "data/slowdir", "slow.json"):
        assert not project.exists(rel), f"{rel} was left behind"
    assert_cache_sound(project)

    (project.root / "hold").unlink()
    proc2 = project.pivot("run", "--json")
    expected = ["slow"] if "other.lock" in locks else ["other", "slow"]
    assert sorted(started_stages(proc2)) == expected, proc2.stdout
    assert_locks_match_workspace(project)


def test_ctrl_c_prints_no_traceback(project: Project, procs: list) -> None:
    """Ctrl-C in a terminal: `interrupted`, exit 130, and no traceback from pivot or its workers.
    The failure is a race, so the interrupt is repeated a few times."""
    project.write("data/raw.txt", "raw\n")
    project.pipeline(pipeline_text())
    project.write("hold", "")
    for attempt in range(1, 6):
        (project.root / "ready").unlink(missing_ok=True)
        proc = start(project, "run")
        procs.append(proc)
        wait_for(project.root / "ready", proc)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 130, f"exit {proc.returncode}\n{out}\n{err}"
        assert "interrupted" in err
        assert "Traceback" not in err, f"attempt {attempt}:\n{err}"


# -- kill -9 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("write_first", [True, False], ids=["after-partial-write", "before-any-write"])
def test_sigkill_mid_stage_next_run_rebuilds(done: Project, procs: list, write_first: bool) -> None:
    project = done
    other_lock = project.lock("other")
    project.pipeline(pipeline_text(slow="v2", write_first=write_first))
    project.write("hold", "")
    proc = start(project, "run")
    procs.append(proc)
    wait_for(project.root / "ready", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGKILL

    (project.root / "hold").unlink()
    proc2 = project.pivot("run", "--json")  # the lock left by the killed run must not block this one
    assert started_stages(proc2) == ["slow"], proc2.stdout
    assert project.read("data/slow.txt") == "partial v2 complete"
    assert read_tree(project, "data/slowdir") == {"a.txt": b"a v2"}
    assert project.read("slow.json") == '{"version": "v2"}'
    assert project.lock("other") == other_lock
    assert_cache_sound(project)
    assert_locks_match_workspace(project)


@pytest.mark.parametrize("write_first", [True, False], ids=["after-partial-write", "before-any-write"])
def test_sigkill_then_code_reverted_brings_back_previous_outputs(done: Project, procs: list,
                                                                 write_first: bool) -> None:
    """The killed run had moved slow's outputs aside. With the code back as it was, the next run
    must end with exactly the previous outputs (recovered from where they were moved, or rebuilt),
    including the metric, which is not in the cache."""
    project = done
    locks = {name: project.lock(name) for name in ("early", "slow", "other")}
    old = {"data/slow.txt": project.read("data/slow.txt"), "slow.json": project.read("slow.json")}
    old_dir = read_tree(project, "data/slowdir")
    files_before = workspace_files(project)

    project.pipeline(pipeline_text(slow="v2", write_first=write_first))
    project.write("hold", "")
    proc = start(project, "run")
    procs.append(proc)
    wait_for(project.root / "ready", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=20)

    (project.root / "hold").unlink()
    (project.root / "ready").unlink()
    project.pipeline(pipeline_text())  # back to the code of the first run
    proc2 = project.pivot("run", "--json")
    assert set(started_stages(proc2)) <= {"slow"}, proc2.stdout
    for rel, text in old.items():
        assert project.read(rel) == text, rel
    assert read_tree(project, "data/slowdir") == old_dir
    assert {name: project.lock(name) for name in locks} == locks
    assert workspace_files(project) == files_before
    assert_cache_sound(project)
    assert_locks_match_workspace(project)


def test_sigkill_then_status_and_checkout_work(done: Project, procs: list) -> None:
    project = done
    project.pipeline(pipeline_text(slow="v2", write_first=False))
    project.write("hold", "")
    proc = start(project, "run")
    procs.append(proc)
    wait_for(project.root / "ready", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=20)
    # the lock of the dead run blocks neither a read-only nor a writing command
    status = project.pivot("status", "--json")
    assert {s["stage"]: s["stale"] for s in json.loads(status.stdout)} == {"early": False, "slow": True,
                                                                             "other": False}
    project.pivot("checkout", "other")


def test_sigkill_of_the_pivot_process_alone_leaves_no_worker_behind(done: Project, procs: list) -> None:
    project = done
    project.pipeline(pipeline_text(slow="v2", write_first=False))
    project.write("hold", "")
    proc = start(project, "run", to_files=True)
    procs.append(proc)
    wait_for(project.root / "ready", proc)
    proc.kill()  # SIGKILL to the pivot process only, not its group
    proc.wait(timeout=20)
    deadline = time.monotonic() + 5
    while (survivors := live_group_members(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)

    # the next run, with the code back as it was, brings back slow's previous outputs
    (project.root / "hold").unlink()
    (project.root / "ready").unlink()
    project.pipeline(pipeline_text())
    project.pivot("run")
    assert project.read("data/slow.txt") == "partial v1 complete"
    # whatever the killed run started must not change the workspace any more
    project.write("release", "")
    if survivors:
        deadline = time.monotonic() + 10
        while "v2" not in project.read("slow.json") and time.monotonic() < deadline:
            time.sleep(0.05)
    assert project.read("data/slow.txt") == "partial v1 complete", "a worker of the killed run wrote it"
    assert_locks_match_workspace(project)
    assert survivors == [], f"still running 5s after their pivot process was killed: {survivors}"


# -- two runs at once ------------------------------------------------------------------------


def test_second_run_fails_at_once_naming_the_first_pid(done: Project, procs: list) -> None:
    project = done
    project.pipeline(pipeline_text(slow="v2"))
    project.write("hold", "")
    first = start(project, "run")
    procs.append(first)
    wait_for(project.root / "ready", first)
    slow_lock = project.lock("slow")

    for args in (("run",), ("run", "other", "--force"), ("checkout",)):
        t0 = time.monotonic()
        second = project.pivot(*args, check=False, timeout=30)
        elapsed = time.monotonic() - t0
        assert second.returncode == 1, f"pivot {' '.join(args)}: exit {second.returncode}\n{second.stderr}"
        assert elapsed < 10, f"pivot {' '.join(args)} waited {elapsed:.1f}s instead of failing at once"
        assert "Traceback" not in second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), second.stderr
        assert re.search(rf"\b{first.pid}\b", lines[0]), f"pid {first.pid} not named: {lines[0]}"
        assert "running" not in second.stdout
    assert first.poll() is None, "the first run must not be disturbed"
    assert project.lock("slow") == slow_lock

    # the first run, released, finishes normally
    project.write("release", "")
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, f"{out}\n{err}"
    assert project.read("data/slow.txt") == "partial v2 complete"
    assert project.lock("slow") != slow_lock
    # and with it gone, the project is free again
    (project.root / "hold").unlink()
    after = project.pivot("run", "--json")
    assert started_stages(after) == []
    assert_locks_match_workspace(project)


# -- Ctrl-C inside a single write ------------------------------------------------------------


def _sigint_storm(action, rounds: int, longest: float) -> int:
    """Run `action` `rounds` times, each with a real SIGINT due at a random moment within
    `longest` seconds (a SIGALRM timer that raises SIGINT), so interrupts land at every point of
    it. Returns how many rounds were interrupted."""
    import random

    interrupted = 0
    rng = random.Random(7)
    old_alarm = signal.signal(signal.SIGALRM, lambda *_: signal.raise_signal(signal.SIGINT))
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for i in range(rounds):
            try:
                signal.setitimer(signal.ITIMER_REAL, rng.uniform(1e-6, longest))
                action(i)
                time.sleep(longest)  # the interrupt, if not yet delivered, comes here
            except KeyboardInterrupt:
                interrupted += 1
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_alarm)
        signal.signal(signal.SIGINT, old_int)
    return interrupted


def test_ctrl_c_during_an_atomic_write_leaves_the_old_or_new_file_and_no_temporary(tmp_path: Path) -> None:
    """A Ctrl-C that lands between creating the temporary and the `try` that removes it used
    to leave `.x.lock.*.tmp` behind (seen in CI as a stray `.other.lock.*.tmp`)."""
    from pivot import atomic

    target = tmp_path / "x.lock"
    versions = {str(i).encode() * 1000 for i in range(-1, 600)}
    atomic.write_bytes(target, b"-1" * 1000)

    def write(i: int) -> None:
        atomic.write_bytes(target, str(i).encode() * 1000)

    interrupted = _sigint_storm(write, 600, 0.0003)
    assert interrupted == 600, "every round should have been interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.lock"]
    assert target.read_bytes() in versions


def test_interrupts_deferred_delivers_ctrl_c_after_the_block() -> None:
    from pivot import atomic

    steps: list[str] = []
    with pytest.raises(KeyboardInterrupt), atomic.interrupts_deferred():
        signal.raise_signal(signal.SIGINT)
        steps.append("after the signal")
        with atomic.interrupts_deferred():  # nested: the inner one hands it to the outer
            signal.raise_signal(signal.SIGINT)
            steps.append("inner")
        steps.append("outer end")
    assert steps == ["after the signal", "inner", "outer end"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with atomic.interrupts_deferred():  # no signal: nothing raised
        steps.append("quiet")
    assert steps[-1] == "quiet"


def test_a_lock_temporary_left_by_a_killed_run_is_removed_by_the_next(project: Project) -> None:
    project.write("data/raw.txt", "raw\n")
    project.pipeline(pipeline_text())
    project.pivot("run")
    stray = project.root / ".pivot" / "stages" / ".other.lock.faohj0ff.tmp"
    stray.write_text("half a lock")
    project.pivot("run")
    assert sorted(p.name for p in stray.parent.iterdir()) == ["early.lock", "other.lock", "slow.lock"]


def test_ctrl_c_while_the_next_stage_is_sent_keeps_the_lock_of_the_finished_one(project: Project,
                                                                                clean_modules: None) -> None:
    """A Ctrl-C while the next stage is sent to a worker keeps the lock of the stage that finished
    before it (a guard for any change that would write locks later than when a stage finishes)."""
    from pivot.executor import InlineExecutor, StageResult, StageTask
    from pivot.repo import Repo
    from pivot.reporter import Reporter
    from pivot.run import Runner, RunOptions

    class CtrlCOnSecond(InlineExecutor):
        def submit(self, task: StageTask) -> Future[StageResult]:
            if task.name == "second":
                raise KeyboardInterrupt
            return super().submit(task)

    project.write("data/raw.txt", "raw\n")
    project.pipeline("""\
        from pivot import stage

        @stage(deps=["data/raw.txt"], outs=["data/first.txt"])
        def first():
            open("data/first.txt", "w").write(open("data/raw.txt").read())

        @stage(deps=["data/first.txt"], outs=["data/second.txt"])
        def second():
            open("data/second.txt", "w").write("2")
        """)
    repo = Repo.load(project.root)
    try:
        with pytest.raises(KeyboardInterrupt):
            Runner(repo, Reporter(), executor_factory=CtrlCOnSecond).run(RunOptions())
    finally:
        repo.close()
    assert project.exists(".pivot/stages/first.lock")
    assert not project.exists(".pivot/stages/second.lock")
    status = json.loads(project.pivot("status", "--json").stdout)
    assert {s["stage"]: s["stale"] for s in status} == {"first": False, "second": True}
