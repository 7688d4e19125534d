"""`pivot run --watch`: from a save to the affected stage starting.

A project of eight stages: `prep` uses a helper module (src/helpers.py) and reads
data/raw.csv, `train` reads prep's output and has params (params.yaml), `report`
reads train's output, and five independent stages read data/other.csv. The
watcher runs as `pivot run --watch --json`; the script then makes E scripted
edits in turn (default 20), each after the watcher says it is watching again:

- helper: a code change of `scale()` in src/helpers.py (prep runs; the workers
  imported the helper, so the pool is replaced),
- param:  a new `train.epochs` in params.yaml (train runs),
- data:   a new data/raw.csv (prep runs).

Each stage appends `<stage> <time.time()>` to a file outside the project when it
starts (in the worker, inside the stage function). A sample is that time minus
the time just before the edit was written: save to stage start, including the
debounce, re-loading the pipeline, deciding, and (helper edits) new workers.
Each edit is also checked: the affected stage started, the five unrelated
stages did not.

    .venv/bin/python benchmarks/bench_watch.py [--edits 20] [--pivot PATH] [--fresh]

--fresh measures the same edits without the watcher, for reference: after each
edit a new `pivot run --json` process starts (as a user or an editor's
on-save hook would), and the sample is again save to stage start.

Prints median, 95th percentile and max (all edits, and per kind) and writes the
samples as JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from benchlib import machine_info, markdown_table, resolve_executable, tool_env, write_results

PIPELINE = '''
import os
import time

from pydantic import BaseModel

from pivot import stage
from src.helpers import scale


def stamp(name):
    with open(os.environ["BENCH_STAMPS"], "a") as f:
        f.write(f"{name} {time.time()}\\n")


class TrainParams(BaseModel):
    epochs: int = 1


@stage(deps=["data/raw.csv"], outs=["out/prep.txt"])
def prep():
    stamp("prep")
    nums = [scale(int(x)) for x in open("data/raw.csv").read().split(",")]
    open("out/prep.txt", "w").write(",".join(map(str, nums)))


@stage(deps=["out/prep.txt"], outs=["out/model.txt"], params=TrainParams)
def train(p: TrainParams):
    stamp("train")
    open("out/model.txt", "w").write(f"{p.epochs} {open('out/prep.txt').read()}")


@stage(deps=["out/model.txt"], outs=["out/report.txt"])
def report():
    stamp("report")
    open("out/report.txt", "w").write(open("out/model.txt").read().upper())
'''

OTHER = '''

@stage(deps=["data/other.csv"], outs=["out/other{i}.txt"], name="other{i}")
def other{i}():
    stamp("other{i}")
    open("out/other{i}.txt", "w").write(open("data/other.csv").read())
'''

HELPERS = "def scale(x):\n    return x * {k}\n"
UNRELATED = {f"other{i}" for i in range(5)}


def make_project(root: Path, pivot: str) -> None:
    env = tool_env()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, env=env)
    subprocess.run([pivot, "init"], cwd=root, check=True, env=env, capture_output=True)
    for rel, text in {
        "pipeline.py": PIPELINE + "".join(OTHER.format(i=i) for i in range(5)),
        "src/__init__.py": "",
        "src/helpers.py": HELPERS.format(k=2),
        "params.yaml": "train:\n  epochs: 1  # how long to train\n",
        "data/raw.csv": "1,2,3",
        "data/other.csv": "a,b,c",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))


class Watcher:
    """`pivot run --watch --json` in a subprocess; its events in a queue."""

    def __init__(self, pivot: str, root: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([pivot, "run", "--watch", "--json"], cwd=root, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def until(self, event: str, timeout: float = 60) -> list[dict[str, Any]]:
        """The events up to and including the next `event`."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            ev = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            seen.append(ev)
            if ev["event"] == event:
                return seen

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=30)


def stamps(path: Path) -> list[tuple[str, float]]:
    if not path.exists():
        return []
    return [(name, float(t)) for name, t in (line.split() for line in path.read_text().splitlines())]


def edit(root: Path, kind: str, n: int) -> str:
    """Write edit number n of `kind`; the stage it must start."""
    if kind == "helper":
        (root / "src/helpers.py").write_text(HELPERS.format(k=n + 3))
        return "prep"
    if kind == "param":
        (root / "params.yaml").write_text(f"train:\n  epochs: {n + 2}  # how long to train\n")
        return "train"
    (root / "data/raw.csv").write_text(f"1,2,{n + 4}")
    return "prep"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edits", type=int, default=20)
    ap.add_argument("--pivot", default=None, help="the pivot executable (default: $PIVOT, else on PATH)")
    ap.add_argument("--pause", type=float, default=0.3, help="seconds between the watcher idling and the next edit")
    ap.add_argument("--fresh", action="store_true", help="no watcher: a new `pivot run` after each edit")
    args = ap.parse_args()
    pivot = resolve_executable(args.pivot, "PIVOT", str(Path(sys.executable).parent / "pivot"))
    if pivot is None:
        print("pivot not found", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        root = Path(tmp) / "project"
        root.mkdir()
        make_project(root, pivot)
        stamp_file = Path(tmp) / "stamps.txt"
        env = {**tool_env(), "BENCH_STAMPS": str(stamp_file)}
        samples: list[dict[str, Any]] = []
        problems: list[str] = []
        if args.fresh:
            subprocess.run([pivot, "run"], cwd=root, env=env, check=True, capture_output=True)
        watcher = None if args.fresh else Watcher(pivot, root, env)
        try:
            if watcher is not None:
                watcher.until("watching", timeout=120)
            for n in range(args.edits):
                kind = ("helper", "param", "data")[n % 3]
                time.sleep(args.pause)
                before = len(stamps(stamp_file))
                t0 = time.time()
                expected = edit(root, kind, n)
                if watcher is None:
                    out = subprocess.run([pivot, "run", "--json"], cwd=root, env=env, capture_output=True,
                                         text=True).stdout
                    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
                else:
                    events = watcher.until("watching")
                started = {name: t for name, t in stamps(stamp_file)[before:]}
                ran = {ev["stage"] for ev in events if ev["event"] == "running"}
                if expected not in started:
                    problems.append(f"edit {n} ({kind}): {expected} did not start; events {events}")
                    continue
                if ran & UNRELATED:
                    problems.append(f"edit {n} ({kind}): unrelated stages started: {sorted(ran & UNRELATED)}")
                samples.append({"edit": n, "kind": kind, "seconds": started[expected] - t0})
        finally:
            code = watcher.stop() if watcher is not None else 130
        if code != 130:
            problems.append(f"the watcher exited {code} on Ctrl-C, not 130")
    rows = []
    for label in ("all", "helper", "param", "data"):
        values = [s["seconds"] for s in samples if label in ("all", s["kind"])]
        if values:
            rows.append([label, str(len(values)), f"{statistics.median(values):.3f}",
                         f"{percentile(values, 0.95):.3f}", f"{max(values):.3f}"])
    how = "a new pivot run per edit" if args.fresh else "pivot run --watch"
    print(f"save -> affected stage starts (s), {how}, {args.edits} edits, load {os.getloadavg()[0]:.2f}")
    print(markdown_table(["edits", "n", "median", "p95", "max"], rows))
    for p in problems:
        print("PROBLEM:", p)
    path = write_results("watch-fresh" if args.fresh else "watch",
                         {"machine": machine_info(), "samples": samples, "problems": problems})
    print(f"samples: {path}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
