"""`pivot status` over one 100,000-file folder, before and after a change of Pivot, against the
walk floor measured in the same run.

Two shapes, each a project generated once and used by every Pivot being compared (each keeps its
own .pivot/state.db, moved aside while another Pivot runs, so versions of different state schemas
can be compared; a status of each Pivot starts its turn of every round, 2.1 s after the last
change to the folder, past the racy window, so each case starts from that Pivot's own memo):

- output   one stage owning a folder of N small files (`gen_pipelines.py --shape dir`), run once;
- tracked  a folder of N files of 1-4 KiB in 100 subfolders (as bench_track.py), `pivot track`ed.

Cases, each the median of `--repeat` rounds; in a round every Pivot runs each case once, in
alternating order (before/after, then after/before), so load drifts hit both alike:

- unchanged  `pivot status` with nothing changed since the last status;
- touched    the first `pivot status` after one file was rewritten (another file each round);
- no-state   `pivot status` with .pivot/state.db deleted: every file is read and hashed.

Each status is also reported by its CPU time (user + system, from wait4), the figure least
moved by other work on a busy machine. floor is the time a fresh Python takes, inside the
process, to walk the folder with os.scandir and stat every entry (`os.scandir` +
`DirEntry.stat()`, as any status must), wall and CPU, in one process; the 2-process floor is the
same walk with the stat of half the files in a forked child (as Pivot walks a large folder on
two CPUs). Both run in each round too. Between
cases the changed file gets its old content back (new inode, old mtime) and a status is run
untimed, so each case starts from the state it names. Every timed command starts
after `sync`; the load average is recorded with each sample.

    .venv/bin/python benchmarks/bench_bigdir.py --pivot after=.venv/bin/pivot \\
        --pivot before=/work/main-base/.venv/bin/pivot [--files 100000] [--repeat 5] [--shapes output,tracked]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_track import generate as generate_tracked
from benchlib import machine_info, markdown_table, run_timed, tool_env, write_results
from gen_pipelines import DIR_OUT
from gen_pipelines import generate as generate_pipeline

CASES = ("unchanged", "touched", "no-state")
FLOOR = """
import os, sys, time
start, cpu = time.perf_counter(), time.process_time()
stack, n = [sys.argv[1]], 0
while stack:
    with os.scandir(stack.pop()) as it:
        for e in it:
            if e.stat().st_mode & 0o170000 == 0o040000:
                stack.append(e.path)
            else:
                n += 1
print(time.perf_counter() - start, n, time.process_time() - cpu)
"""
# The same walk shared by two processes (what pivot/walk.py does on 2 CPUs): the folders listed
# here, then a forked child stats the second half of the files; wall time to the child's end, CPU
# of both.
FLOOR2 = """
import os, resource, sys, time
start = time.perf_counter()
stack, files = [sys.argv[1]], []
while stack:
    top = stack.pop()
    fd = os.open(top, os.O_RDONLY)
    with os.scandir(fd) as it:
        for e in it:
            if e.is_dir():
                stack.append(os.path.join(top, e.name))
            else:
                files.append((fd, e.name))
half = len(files) // 2
pid = os.fork()
for fd, name in (files[half:] if pid == 0 else files[:half]):
    os.stat(name, dir_fd=fd)
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
wall = time.perf_counter() - start
cpu = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
          for f in ("ru_utime", "ru_stime"))
print(wall, len(files), cpu)
"""


def sh(argv: list[str], cwd: Path) -> str:
    result = run_timed(argv, cwd, timeout=3600, env=tool_env())
    if not result.ok:
        raise SystemExit(result.failure())
    return result.stdout


class Shape:
    """A generated project of one shape, and how to change one of its files and put it back."""

    def __init__(self, name: str, folder: str, master: Path) -> None:
        self.name = name
        self.folder = folder  # the big folder, relative to the project
        self.master = master
        self.files = sorted(str(p.relative_to(master / folder)) for p in (master / folder).rglob("*") if p.is_file())

    def touch(self, proj: Path, round_: int) -> tuple[Path, bytes, int]:
        """Rewrite one file (a new inode, as an editor saving it does), mtime 5 s ago."""
        path = proj / self.folder / self.files[(round_ * 7919) % len(self.files)]
        old = path.read_bytes(), path.stat().st_mtime_ns
        path.chmod(0o644)
        path.unlink()  # break any link into the cache
        path.write_bytes(old[0] + b"changed\n")
        past = time.time_ns() - 5 * 10**9
        os.utime(path, ns=(past, past))
        return path, old[0], old[1]

    @staticmethod
    def untouch(path: Path, content: bytes, mtime: int) -> None:
        path.unlink()
        path.write_bytes(content)
        os.utime(path, ns=(mtime, mtime))


def make_output(work: Path, files: int, exe: str) -> Shape:
    master = work / "output-master"
    generate_pipeline(master, "pivot", "dir", files, exe)
    sh([exe, "run"], master)
    return Shape("output", DIR_OUT, master)


def make_tracked(work: Path, files: int, exe: str) -> Shape:
    master = work / "tracked-master"
    master.mkdir()
    sh(["git", "init", "-q"], master)
    sh([exe, "init"], master)
    (master / "pipeline.py").write_text("from pivot import stage  # no stages: tracked data only\n")
    generate_tracked(master / "data", files)
    sh([exe, "track", "data"], master)
    sh(["git", "add", "-A"], master)
    sh(["git", "commit", "-q", "-m", "data"], master)
    return Shape("tracked", "data", master)


RACY_S = 2.1  # a file changed less than 2 s before a memo was taken is read again (hashing.RACY_NS)


def set_old(folder: Path) -> None:
    """Every file's mtime an hour ago: what a status then remembers is not 'racy'."""
    past = time.time_ns() - 3600 * 10**9
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            os.utime(os.path.join(dirpath, name), ns=(past, past), follow_symlinks=False)


class Bench:
    def __init__(self, args: Any, tools: dict[str, str]) -> None:
        self.args = args
        self.tools = tools
        self.samples: dict[str, list[float]] = {}
        self.loads: list[float] = []

    def add(self, key: str, seconds: tuple[float, float]) -> None:
        """A sample: wall time, and CPU time (user + system) under `key`:cpu."""
        self.samples.setdefault(key, []).append(seconds[0])
        self.samples.setdefault(f"{key}:cpu", []).append(seconds[1])
        self.loads.append(os.getloadavg()[0])

    def status(self, exe: str, proj: Path) -> tuple[float, float]:
        os.sync()
        result = run_timed([exe, "status"], proj, timeout=600, env=tool_env())
        if not result.ok and result.returncode != 1:
            raise SystemExit(result.failure())
        return result.seconds, result.cpu_seconds

    def floor(self, folder: Path, script: str = FLOOR) -> tuple[float, float]:
        os.sync()
        out = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, check=True)
        wall, _n, cpu = out.stdout.split()
        return float(wall), float(cpu)

    @staticmethod
    def swap_memo(proj: Path, tool: str, shape: Shape, into: bool) -> None:
        """Put a Pivot's own state database in the project (into) or aside (not into): two
        versions of different state schemas would otherwise each rebuild the other's."""
        aside = proj.parent / f"memo-{shape.name}-{tool}"
        aside.mkdir(exist_ok=True)
        src, dst = (aside, proj / ".pivot") if into else (proj / ".pivot", aside)
        for memo in dst.glob("state.db*"):
            memo.unlink()
        for memo in src.glob("state.db*"):
            memo.rename(dst / memo.name)

    def round(self, shape: Shape, round_: int) -> None:
        order = list(self.tools) if round_ % 2 == 0 else list(reversed(self.tools))
        proj = shape.master
        self.add(f"{shape.name}:floor", self.floor(proj / shape.folder))
        self.add(f"{shape.name}:floor2", self.floor(proj / shape.folder, FLOOR2))
        for tool in order:
            exe = self.tools[tool]
            self.swap_memo(proj, tool, shape, into=True)
            time.sleep(RACY_S)  # the last change (the file put back) is past the racy window
            self.status(exe, proj)  # its memo of the folder as it is now
            self.add(f"{shape.name}:{tool}:unchanged", self.status(exe, proj))
            path, content, mtime = shape.touch(proj, round_)
            self.add(f"{shape.name}:{tool}:touched", self.status(exe, proj))
            Shape.untouch(path, content, mtime)
            self.status(exe, proj)
            for memo in (proj / ".pivot").glob("state.db*"):
                memo.unlink()
            self.add(f"{shape.name}:{tool}:no-state", self.status(exe, proj))
            self.swap_memo(proj, tool, shape, into=False)

    def shape(self, shape: Shape) -> None:
        """One project serves every Pivot: each keeps its own state database, moved aside while
        another Pivot runs, and each case starts from that Pivot's memo."""
        set_old(shape.master / shape.folder)
        for tool, exe in self.tools.items():
            self.status(exe, shape.master)
            self.swap_memo(shape.master, tool, shape, into=False)
        for r in range(self.args.repeat):
            self.round(shape, r)


def median(xs: list[float] | None) -> float | None:
    return statistics.median(xs) if xs else None


def report(b: Bench, shapes: list[str]) -> None:
    tools = list(b.tools)
    rows = []
    for shape in shapes:
        floor = median(b.samples.get(f"{shape}:floor"))
        floor_cpu = median(b.samples.get(f"{shape}:floor:cpu"))
        floor2 = median(b.samples.get(f"{shape}:floor2"))
        for case in CASES:
            cells = [median(b.samples.get(f"{shape}:{t}:{case}")) for t in tools]
            cpus = [median(b.samples.get(f"{shape}:{t}:{case}:cpu")) for t in tools]
            row = [shape, case] + [f"{c:.3f}" if c is not None else "-" for c in cells + cpus]
            if len(tools) == 2:
                pairs = zip(b.samples.get(f"{shape}:{tools[1]}:{case}", []),
                            b.samples.get(f"{shape}:{tools[0]}:{case}", []), strict=False)
                ratios = [x / y for x, y in pairs]
                row.append(f"{statistics.median(ratios):.2f}" if ratios else "-")
            row.append(f"{floor:.3f}" if floor is not None else "-")
            last = cells[-1]
            row.append(f"{last - floor:+.3f}" if last is not None and floor is not None else "-")
            row.append(f"{floor_cpu:.3f}" if floor_cpu is not None else "-")
            row.append(f"{floor2:.3f}" if floor2 is not None else "-")
            rows.append(row)
    header = ["shape", "case", *(f"{t} (s)" for t in tools), *(f"{t} CPU (s)" for t in tools)]
    if len(tools) == 2:
        header.append(f"{tools[1]} / {tools[0]} (paired)")
    header += ["walk floor (s)", f"{tools[-1]} − floor", "floor CPU (s)", "2-process floor (s)"]
    print(f"{b.args.files:,} files; median of {b.args.repeat} rounds; load average 1 min during the samples: "
          f"median {statistics.median(b.loads):.1f} (min {min(b.loads):.1f}, max {max(b.loads):.1f})")
    print(markdown_table(header, rows))
    path = write_results("bigdir", {"machine": machine_info(), "args": vars(b.args), "tools": b.tools,
                                    "samples": b.samples, "loads": b.loads})
    print(f"results: {path}")


def compile_tree(exe: str) -> None:
    """Byte-compile the pivot package an executable runs (PYTHONDONTWRITEBYTECODE is set here)."""
    python = str(Path(exe).parent / "python")
    if not os.path.exists(python):  # a wrapper script: compiling is its maker's business
        return
    where = subprocess.run([python, "-c", "import pivot, os; print(os.path.dirname(pivot.__file__))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    if os.access(where, os.W_OK) and not (Path(where) / "__pycache__").is_dir():
        subprocess.run([python, "-m", "compileall", "-q", where], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pivot", action="append", default=[],
                    help="NAME=EXECUTABLE, once per Pivot to compare (default: after=beside this Python)")
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--shapes", default="output,tracked")
    ap.add_argument("--workdir", help="Where to make the work folder (default: the system's temp folder).")
    args = ap.parse_args()
    tools = {name: str(Path(exe).absolute()) for name, exe in (t.split("=", 1) for t in args.pivot)} \
        or {"after": str(Path(sys.executable).parent / "pivot")}
    for exe in tools.values():
        compile_tree(exe)
    shapes = args.shapes.split(",")
    b = Bench(args, tools)
    work = Path(tempfile.mkdtemp(prefix="pivot-bench-bigdir-", dir=args.workdir))
    maker = tools[list(tools)[-1]]
    try:
        for name in shapes:
            shape = (make_output if name == "output" else make_tracked)(work, args.files, maker)
            b.shape(shape)
            shutil.rmtree(shape.master)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(b, shapes)


if __name__ == "__main__":
    main()
