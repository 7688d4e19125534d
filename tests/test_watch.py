"""pivot run --watch: the real watcher in a subprocess, driven by scripted saves, read through
its --json event stream (docs/watch.md)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import PIVOT, Project

PIPELINE = """
import os
import time

from pydantic import BaseModel

from pivot import stage
from src.helpers import scale


class TrainParams(BaseModel):
    epochs: int = 1


def worker(stage):
    with open("pids.txt", "a") as f:  # which worker process ran the stage
        f.write(f"{stage} {os.getpid()}\\n")


@stage(deps=["data/raw.txt"], outs=["out/prep.txt"])
def prep():
    worker("prep")
    text = open("data/raw.txt").read()
    if text.startswith("fail"):
        raise ValueError("raw data says fail")
    if text.startswith("nap"):
        time.sleep(1)
    if text.startswith("slow"):
        open("out/prep.txt", "w").write("half")
        open("started", "w").close()
        time.sleep(60)
    open("out/prep.txt", "w").write(str(scale(len(text))))


@stage(deps=["out/prep.txt"], outs=["out/model.txt"], params=TrainParams)
def train(p: TrainParams):
    worker("train")
    open("out/model.txt", "w").write(f"{p.epochs} x {open('out/prep.txt').read()}")


@stage(deps=["data/other.txt"], outs=["out/other.txt"])
def other():
    worker("other")
    open("out/other.txt", "w").write(open("data/other.txt").read())
"""

HELPERS = """
def scale(n):
    # the factor
    return n * 2
"""


class Watcher:
    """`pivot run --watch --json` in its own session; its JSON events in a queue."""

    def __init__(self, project: Project) -> None:
        self.project = project
        # one worker: which process runs a stage tells whether the pool was kept or replaced
        self.proc = subprocess.Popen([PIVOT, "run", "--watch", "--json", "-j", "1"], cwd=project.root, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.put(json.loads(line))

    def until(self, event: str, timeout: float = 20) -> list[dict[str, Any]]:
        """The events up to and including the next `event`."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                ev = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no '{event}' event within {timeout}s; got {seen}; "
                                     f"exit {self.proc.poll()}") from None
            seen.append(ev)
            if ev["event"] == event:
                return seen

    def quiet(self, seconds: float) -> None:
        """No event for `seconds`."""
        try:
            ev = self.events.get(timeout=seconds)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected event {ev}")

    def write(self, rel: str, text: str) -> None:
        """Save a file as many editors do: a temporary file renamed over it. (Written in place,
        a test on a loaded machine could be descheduled between the truncation and the write
        for longer than the watcher's batching, and the watcher would see an empty file first.)"""
        path = self.project.root / rel
        tmp = path.parent / f".{path.name}.saving"
        tmp.write_text(textwrap.dedent(text))
        os.replace(tmp, path)

    def save(self, rel: str, text: str) -> list[dict[str, Any]]:
        """Save a file, then return the events up to the watcher's next `watching`."""
        self.write(rel, text)
        return self.until("watching")

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C in a terminal: SIGINT to the whole process group (pivot and its workers)."""
        os.killpg(self.proc.pid, signal.SIGINT)
        _out, err = self.proc.communicate(timeout=20)
        return self.proc.returncode, err


def last_worker(project: Project, stage: str) -> str:
    return [line.split()[1] for line in project.read("pids.txt").splitlines() if line.split()[0] == stage][-1]


def started(events: list[dict[str, Any]]) -> list[str]:
    return [e["stage"] for e in events if e["event"] == "running"]


@pytest.fixture
def watched(project: Project) -> Iterator[Watcher]:
    project.pipeline(PIPELINE)
    project.write("src/__init__.py", "")
    project.write("src/helpers.py", HELPERS)
    project.write("params.yaml", "train:\n  epochs: 1  # a comment that stays\n")
    project.write("data/raw.txt", "abc")
    project.write("data/other.txt", "other")
    w = Watcher(project)
    first = w.until("watching", timeout=60)
    assert first[0] == {"event": "watch_run", "run": 1, "changes": []}
    assert sorted(started(first)) == ["other", "prep", "train"], first
    yield w
    if w.proc.poll() is None:
        os.killpg(w.proc.pid, signal.SIGKILL)
        w.proc.wait()


def test_edits_rerun_exactly_the_stages_they_make_stale(watched: Watcher) -> None:
    project = watched.project
    watched.quiet(0.5)  # the first run's own writes (outputs, locks, .gitignore) start nothing
    first_pool = last_worker(project, "prep")

    # a helper's code: the stage that calls it and the one downstream; `other` never starts
    events = watched.save("src/helpers.py", HELPERS.replace("n * 2", "n * 3"))
    assert events[0] == {"event": "watch_run", "run": 2, "changes": ["src/helpers.py"]}
    assert started(events) == ["prep", "train"], events
    assert events[-2]["event"] == "summary" and events[-2]["skipped"] == ["other"]
    assert project.read("out/model.txt") == "1 x 9"
    assert last_worker(project, "prep") != first_pool  # its worker had imported the old helper

    # a comment in the helper: the fingerprint ignores it; one quiet event, nothing runs
    events = watched.save("src/helpers.py", HELPERS.replace("n * 2", "n * 3").replace("factor", "multiplier"))
    assert events == [{"event": "unaffected", "changes": ["src/helpers.py"]}, {"event": "watching", "run": 2}]

    # params.yaml: only the stage with those params
    events = watched.save("params.yaml", "train:\n  epochs: 5  # a comment that stays\n")
    assert events[0]["changes"] == ["params.yaml"]
    assert started(events) == ["train"], events
    assert project.read("out/model.txt") == "5 x 9"

    # an output written by hand is not a trigger: the next event is the dependency's save
    watched.write("out/other.txt", "scribbled")
    time.sleep(0.3)
    events = watched.save("data/other.txt", "other v2")
    assert events[0] == {"event": "watch_run", "run": 4, "changes": ["data/other.txt"]}, events
    assert started(events) == ["other"], events
    assert last_worker(project, "other") == last_worker(project, "train")  # no code changed: same worker
    watched.quiet(0.3)

    code, err = watched.interrupt()  # Ctrl-C while watching
    assert code == 130, err
    assert "interrupted" in err and "Traceback" not in err, err


def test_broken_import_is_reported_and_the_fix_runs(watched: Watcher) -> None:
    events = watched.save("src/helpers.py", HELPERS.replace("return n * 2", "return n *"))
    assert [e["event"] for e in events] == ["watch_error", "watching"], events
    error = events[0]["error"]
    assert error.startswith("could not import the pipeline"), error
    assert "src/helpers.py:4: SyntaxError" in error, error
    assert "\n" not in error

    events = watched.save("src/helpers.py", HELPERS.replace("n * 2", "n * 4"))
    assert started(events) == ["prep", "train"], events
    assert watched.project.read("out/prep.txt") == "12"  # the workers run the fixed code
    code, err = watched.interrupt()
    assert code == 130 and err.count(f"error: {error}") == 1, err  # on stderr too, as any error of --json


def test_failing_stage_is_reported_and_watching_continues(watched: Watcher) -> None:
    events = watched.save("data/raw.txt", "fail now")
    failed = [e for e in events if e["event"] == "failed"]
    assert [e["stage"] for e in failed] == ["prep"] and "raw data says fail" in failed[0]["error"]
    assert events[-2]["event"] == "summary" and "train" in events[-2]["not_run"]
    assert watched.project.read("out/prep.txt") == "6"  # rolled back to the last good output

    events = watched.save("data/raw.txt", "abcd")
    assert started(events) == ["prep", "train"], events
    assert watched.project.read("out/model.txt") == "1 x 8"


def test_a_save_during_a_run_starts_the_next_run(watched: Watcher) -> None:
    project = watched.project
    watched.write("data/raw.txt", "nap")
    assert started(watched.until("running")) == ["prep"]
    watched.write("src/helpers.py", HELPERS.replace("n * 2", "n * 5"))  # prep was decided before this
    events = watched.until("watching")
    assert project.read("out/prep.txt") == "6", events  # the run under way ran the code it decided on
    events = watched.until("watching")
    assert events[0] == {"event": "watch_run", "run": 3, "changes": ["src/helpers.py"]}, events
    assert started(events) == ["prep", "train"], events
    assert project.read("out/prep.txt") == "15"


def test_ctrl_c_during_a_run_leaves_nothing_half_written(watched: Watcher) -> None:
    project = watched.project
    lock_before = project.lock("prep")
    watched.write("data/raw.txt", "slow")
    watched.until("running")
    deadline = time.monotonic() + 20
    while not project.exists("started"):  # the stage has written half its output
        assert time.monotonic() < deadline, "the slow stage did not start"
        time.sleep(0.02)
    code, err = watched.interrupt()
    assert code == 130, err
    assert "interrupted" in err and "Traceback" not in err, err
    assert project.read("out/prep.txt") == "6"  # the previous output is back
    assert project.lock("prep") == lock_before
    leftovers = [p for p in (project.root / ".pivot").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert not (project.root / ".pivot" / "tmp" / "backup").exists() or \
        not any((project.root / ".pivot" / "tmp" / "backup").iterdir())
    project.write("data/raw.txt", "abcd")
    proc = project.pivot("run", "--json")  # the project is not held; the interrupted stage runs
    assert '"stage": "prep"' in proc.stdout and project.read("out/prep.txt") == "8"


def test_watch_refuses_dry_run(project: Project) -> None:
    proc = project.pivot("run", "--watch", "--dry-run", check=False)
    assert proc.returncode == 2
    assert "--watch runs stages; it cannot be combined with --dry-run" in proc.stderr
