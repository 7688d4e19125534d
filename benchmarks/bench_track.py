"""Tracked-data benchmark: a folder of many small files (default 100,000 files of 1-4 KiB in 100
subfolders) that no stage produces, through `pivot track` and, with `--dvc`, `dvc add` side by
side on the same files:

- track      `pivot track data` / `dvc add data` the first time (a fresh project each repeat);
- status     `pivot status` / `dvc status` with nothing changed;
- status-1   the same after one file's content changed (a different file each repeat);
- retrack-1  `pivot track data` / `dvc add data` again after that change;
- push       `pivot push` / `dvc push` to S3 served by SeaweedFS (tests/seaweed.py) on
             localhost, a fresh prefix of one bucket each repeat;
- noop-push  the same push again, nothing to upload;
- pull       `pivot pull` / `dvc pull` in a fresh clone with an empty cache (the pulled folder is
             checked to hold every file).

Each figure is the median of `--repeat` runs (push, no-op push and pull of DVC: `--dvc-transfer-repeat`,
default 1, as DVC's push and pull of 100,000 files take minutes each). Every timed command starts
after `sync`. On S3 every request goes through bench_remote.py's counting proxy (a process of its
own) unless `--no-count`, and the report gives the requests of each transfer and objects/s.

    .venv/bin/python benchmarks/bench_track.py [--files 100000] [--repeat 3] [--no-count]
        [--dvc [--dvc-bin /work/dvcvenv/bin/dvc] [--dvc-transfer-repeat 1]]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench_remote import ProxyProcess, sh
from benchlib import CmdResult, Measurement, machine_info, markdown_table, run_timed, tool_env, write_results
from seaweed import DUMMY_CREDENTIALS, SeaweedServer

PIVOT = str(Path(sys.executable).parent / "pivot")
BUCKET = "bench"
DATA = "data"
CASES = ("track", "status", "status-1", "retrack-1", "push", "noop-push", "pull")
TRANSFERS = ("push", "noop-push", "pull")


class Bench:
    """The measurements, the S3 endpoint and the request counter shared by both tools' runs."""

    def __init__(self, args: Any, work: Path, gen: Path, endpoint: str, proxy: ProxyProcess | None) -> None:
        self.args = args
        self.work = work
        self.gen = gen
        self.endpoint = endpoint
        self.proxy = proxy
        self.env = {**tool_env(), **DUMMY_CREDENTIALS}
        self.results: dict[str, Measurement] = {}
        self.requests: dict[str, list[int]] = {}

    def m(self, tool: str, case: str) -> Measurement:
        return self.results.setdefault(f"{tool}:{case}", Measurement(tool, case, {"files": self.args.files}))

    def timed(self, tool: str, case: str, argv: list[str], cwd: Path) -> bool:
        """One timed run of `argv`, recorded under `tool:case`; False if it failed."""
        os.sync()
        if self.proxy is not None:
            self.proxy.reset()
        result: CmdResult = run_timed(argv, cwd, timeout=self.args.timeout, env=self.env)
        if case in TRANSFERS and self.proxy is not None and result.ok:
            self.requests.setdefault(f"{tool}:{case}", []).append(self.proxy.count())
        return self.m(tool, case).add(result)

    def sh(self, argv: list[str], cwd: Path) -> None:
        sh(argv, cwd, self.env)


def generate(folder: Path, files: int) -> None:
    """`files` random files of 1-4 KiB in 100 subfolders: data/NN/fNNNNNN.bin."""
    rng = random.Random(42)
    for i in range(files):
        sub = folder / f"{i % 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:06d}.bin").write_bytes(rng.randbytes(rng.randint(1024, 4096)))


def change_one(proj: Path, round_: int) -> None:
    """Rewrite one file (a different one each round) with new content of the same size range."""
    target = proj / DATA / f"{round_ % 100:02d}" / f"f{round_:06d}.bin"
    target.chmod(0o644)  # a read-only cache link mode would have protected it
    target.unlink()  # break any link into the cache before writing
    target.write_bytes(os.urandom(2048 + round_))


def count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


class Tool:
    """What differs between Pivot and DVC: the commands."""

    name: str

    def init(self, b: Bench, proj: Path) -> None: ...
    def track(self, proj: Path) -> list[str]: ...
    def status(self, proj: Path) -> list[str]: ...
    def add_remote(self, b: Bench, proj: Path, url: str) -> None: ...
    def push(self) -> list[str]: ...
    def pull(self) -> list[str]: ...


class PivotTool(Tool):
    name = "pivot"

    def __init__(self, exe: str) -> None:
        self.exe = exe

    def init(self, b: Bench, proj: Path) -> None:
        b.sh([self.exe, "init"], proj)
        (proj / "pipeline.py").write_text("from pivot import stage  # no stages: tracked data only\n")

    def track(self, proj: Path) -> list[str]:
        return [self.exe, "track", DATA]

    def status(self, proj: Path) -> list[str]:
        return [self.exe, "status"]

    def add_remote(self, b: Bench, proj: Path, url: str) -> None:
        b.sh([self.exe, "remote", "add", "r", url, "--default", "--force", "--local",
              "-o", f"endpoint_url={b.endpoint}"], proj)

    def push(self) -> list[str]:
        return [self.exe, "push"]

    def pull(self) -> list[str]:
        return [self.exe, "pull"]


class DvcTool(Tool):
    name = "dvc"

    def __init__(self, exe: str) -> None:
        self.exe = exe

    def init(self, b: Bench, proj: Path) -> None:
        b.sh([self.exe, "init", "-q"], proj)

    def track(self, proj: Path) -> list[str]:
        return [self.exe, "add", "-q", DATA]

    def status(self, proj: Path) -> list[str]:
        return [self.exe, "status"]

    def add_remote(self, b: Bench, proj: Path, url: str) -> None:
        b.sh([self.exe, "remote", "add", "--local", "-f", "-d", "r", url], proj)
        b.sh([self.exe, "remote", "modify", "--local", "r", "endpointurl", b.endpoint], proj)

    def push(self) -> list[str]:
        return [self.exe, "push"]

    def pull(self) -> list[str]:
        return [self.exe, "pull"]


def fresh_project(b: Bench, tool: Tool) -> Path:
    """A committed, empty project of `tool` with a copy of the generated folder (not yet tracked)."""
    proj = b.work / f"{tool.name}-{uuid.uuid4().hex[:8]}"
    proj.mkdir()
    b.sh(["git", "init", "-q"], proj)
    tool.init(b, proj)
    b.sh(["git", "add", "-A"], proj)
    b.sh(["git", "commit", "-q", "-m", "init"], proj)
    shutil.copytree(b.gen, proj / DATA)  # real copies: tracking may make files read-only or link them
    return proj


def bench_tool(b: Bench, tool: Tool, transfer_repeat: int) -> None:
    repeat = b.args.repeat
    proj = None
    for _ in range(repeat):  # first track, each in a fresh project; the last one is kept
        if proj is not None:
            shutil.rmtree(proj)
        proj = fresh_project(b, tool)
        if not b.timed(tool.name, "track", tool.track(proj), proj):
            return
    assert proj is not None
    for _ in range(repeat):
        b.timed(tool.name, "status", tool.status(proj), proj)
    for r in range(repeat):
        change_one(proj, r)
        b.timed(tool.name, "status-1", tool.status(proj), proj)
        b.timed(tool.name, "retrack-1", tool.track(proj), proj)
    b.sh(["git", "add", "-A"], proj)
    b.sh(["git", "commit", "-q", "-m", "data"], proj)
    for _ in range(transfer_repeat):
        url = f"s3://{BUCKET}/{tool.name}-{uuid.uuid4().hex[:8]}"
        tool.add_remote(b, proj, url)
        if not b.timed(tool.name, "push", tool.push(), proj):
            break
        b.timed(tool.name, "noop-push", tool.push(), proj)
        clone = b.work / f"{tool.name}-clone-{uuid.uuid4().hex[:8]}"
        b.sh(["git", "clone", "-q", str(proj), str(clone)], b.work)
        tool.add_remote(b, clone, url)
        if b.timed(tool.name, "pull", tool.pull(), clone):
            found = count_files(clone / DATA) if (clone / DATA).is_dir() else 0
            if found != b.args.files:
                b.m(tool.name, "pull").fail(f"the pulled folder holds {found} files, not {b.args.files}")
        shutil.rmtree(clone)
    shutil.rmtree(proj)


def compile_pivot() -> None:
    """Byte-compile the pivot package the benchmark runs: with PYTHONDONTWRITEBYTECODE set, every
    command would otherwise compile its imports from source."""
    import pivot  # lazy: only to find the package being measured

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(pivot.__file__).parent)], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pivot", default=PIVOT, help="The pivot executable (default: beside this Python).")
    ap.add_argument("--no-count", action="store_true", help="S3 without the request-counting proxy.")
    ap.add_argument("--dvc", action="store_true", help="Run DVC (3.x with dvc-s3) side by side.")
    ap.add_argument("--dvc-bin", default="/work/dvcvenv/bin/dvc")
    ap.add_argument("--dvc-transfer-repeat", type=int, default=1, help="Repeats of DVC's push and pull.")
    ap.add_argument("--timeout", type=float, default=3600, help="Seconds before a command is killed.")
    ap.add_argument("--workdir", help="Where to make the work folder (default: the system's temp folder).")
    ap.add_argument("--keep", action="store_true", help="Keep the work folder.")
    args = ap.parse_args()

    compile_pivot()
    work = Path(tempfile.mkdtemp(prefix="pivot-bench-track-", dir=args.workdir))
    server = proxy = None
    try:
        gen = work / "gen"
        generate(gen, args.files)
        server = SeaweedServer(BUCKET).start()
        endpoint = server.endpoint
        if not args.no_count:
            proxy = ProxyProcess(server.endpoint)
            endpoint = proxy.endpoint
        b = Bench(args, work, gen, endpoint, proxy)
        bench_tool(b, PivotTool(args.pivot), args.repeat)
        if args.dvc:
            bench_tool(b, DvcTool(args.dvc_bin), args.dvc_transfer_repeat)
    finally:
        if proxy is not None:
            proxy.stop()
        if server is not None:
            server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(b, args)


def _cell(m: Measurement | None) -> str:
    if m is None:
        return "-"
    if m.median is None:
        return m.status
    spread = f" ({min(m.samples):.2f}–{max(m.samples):.2f})" if len(m.samples) > 1 else ""
    return f"{m.median:.2f} s{spread} n={len(m.samples)}"


def _rate(files: int, m: Measurement | None) -> str:
    return "-" if m is None or not m.median else f"{files / m.median:,.0f}"


def _requests(b: Bench, key: str) -> str:
    counts = b.requests.get(key)
    return f"{statistics.median(counts):,.0f}" if counts else "-"


def report(b: Bench, args: Any) -> None:
    get: Callable[[str, str], Measurement | None] = lambda tool, case: b.results.get(f"{tool}:{case}")  # noqa: E731 -- a one-line lookup
    rows = []
    for case in CASES:
        p, d = get("pivot", case), get("dvc", case)
        ratio = f"{p.median / d.median:.2f}" if p and d and p.median and d.median else "-"
        rate = case in ("track", "push", "noop-push", "pull")
        rows.append([case, _cell(p), _cell(d), ratio,
                     _rate(args.files, p) if rate else "", _rate(args.files, d) if rate else "",
                     _requests(b, f"pivot:{case}"), _requests(b, f"dvc:{case}")])
    print(f"{args.files:,} files of 1-4 KiB in 100 subfolders; median (min–max) of n runs; S3 = SeaweedFS"
          + (" through the counting proxy" if not args.no_count else ""))
    print(markdown_table(["case", "pivot", "dvc", "pivot / dvc", "pivot objects/s", "dvc objects/s",
                          "pivot requests", "dvc requests"], rows))
    for m in b.results.values():
        if m.status != "ok":
            print(f"{m.tool} {m.metric}: {m.status}: {m.error[:600]}")
    path = write_results("track", {"machine": machine_info(), "args": vars(args),
                                   "results": [m.to_json() for m in b.results.values()],
                                   "s3_requests": b.requests})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
