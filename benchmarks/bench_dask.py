"""Stages on a Dask cluster (`pivot run --executor dask`), against the local pool.

Set-up: SeaweedFS's S3 server (tests/seaweed.py) as the remote, and a `LocalCluster` of W
(default 4) worker processes with one thread each, started by this script; each `pivot run` is
a separate process that connects to it. The cluster and the workers' S3 connections are
warmed up by an untimed run first, as they would be on a long-lived cluster.

1. Per-stage overhead — a chain of N (default 20) trivial stages (each reads the previous
   one's output), so one runs at a time and every step pays the full round trip: the client
   uploads nothing new (the dep was uploaded by the previous stage's worker), submits the
   task, the worker fetches the dep from S3, calls the stage, hashes and uploads the output,
   the client brings it into the cache and the workspace and writes the lock, then prepares
   the next stage. Measured from `pivot run --json`: the time between consecutive `done`
   events, as read from the pipe (median over the N-1 gaps of each run, then over repeats),
   and the stage phase (first `running` to last `done`) divided by N: stages sent as one chain
   (pivot/speculate.py) report together, so the gaps alone would flatter them.
   The local pool (`-j 1`) is measured the same way for comparison (`--no-local`: skipped).
2. Wide — M (default 40) independent stages that each sleep S (default 0.5) seconds, after
   one shared input: the wall time of a whole `pivot run` on the cluster against the local
   pool at `-j 2`, and of its stage phase (first `running` event to last `done`), which leaves
   out each command's fixed start-up (interpreter, imports — distributed alone is about a
   second — connecting to the scheduler). Sleeping needs no CPU, so W workers can overlap
   stages even on a 2-core machine; the ideal stage phase is M*S/W on the cluster and M*S/2
   locally.

Results: a markdown table on stdout, raw samples in benchmarks/results/dask-*.json.

    python benchmarks/bench_dask.py [--workers 4] [--chain 20] [--wide 40] [--sleep 0.5] [--repeats 3] [--no-local]

`--wide 0` skips the wide part.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchlib import machine_info, markdown_table, tool_env, write_results

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from seaweed import DUMMY_CREDENTIALS, SeaweedServer  # noqa: E402

BUCKET = "pivot-bench-dask"
PIVOT = str(Path(sys.executable).parent / "pivot")


def chain_pipeline(n: int) -> str:
    lines = ["from pivot import stage", ""]
    for i in range(n):
        dep = "data/input.txt" if i == 0 else f"out/s{i - 1}.txt"
        lines += ["", f"@stage(deps=[{dep!r}], outs=['out/s{i}.txt'])", f"def s{i}():",
                  f"    text = open({dep!r}).read()",
                  f"    open('out/s{i}.txt', 'w').write(text[:64] + '{i}')", ""]
    return "\n".join(lines)


def wide_pipeline(n: int, seconds: float) -> str:
    lines = ["import time", "", "from pivot import stage", ""]
    for i in range(n):
        lines += ["", f"@stage(deps=['data/input.txt'], outs=['out/w{i}.txt'])", f"def w{i}():",
                  f"    time.sleep({seconds})",
                  f"    open('out/w{i}.txt', 'w').write(open('data/input.txt').read() + '{i}')",
                  ""]
    return "\n".join(lines)


def make_project(base: Path, pipeline: str, endpoint: str | None, env: dict[str, str]) -> Path:
    root = base / uuid.uuid4().hex[:8]
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, env=env)
    subprocess.run([PIVOT, "init"], cwd=root, check=True, env=env, capture_output=True)
    (root / "pipeline.py").write_text(pipeline)
    (root / "data").mkdir()
    (root / "data" / "input.txt").write_text("input data\n")
    if endpoint is not None:
        subprocess.run([PIVOT, "remote", "add", "store", f"s3://{BUCKET}/{root.name}", "--default",
                        "-o", f"endpoint_url={endpoint}"], cwd=root, check=True, env=env, capture_output=True)
    return root


def stream(root: Path, args: list[str], env: dict[str, str]) -> tuple[list[tuple[str, float]], float]:
    """`pivot run --json ARGS`: each event with the time it was read from the pipe, and the wall time."""
    start = time.perf_counter()
    proc = subprocess.Popen([PIVOT, "run", "--json", *args], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    stamps = [(json.loads(line).get("event", ""), time.perf_counter()) for line in proc.stdout]
    err = proc.stderr.read() if proc.stderr else ""
    if proc.wait() != 0:
        raise RuntimeError(f"pivot run {' '.join(args)} failed: {err[-800:]}")
    return stamps, time.perf_counter() - start


def done_gaps(root: Path, args: list[str], env: dict[str, str]) -> tuple[list[float], float, float]:
    """Seconds between consecutive `done` events, the wall time, and the stage phase (first
    `running` to last `done`) divided by the number of stages: with stages batched onto one
    worker round trip, several `done` events arrive together, so the gaps alone would flatter."""
    stamps, wall = stream(root, args, env)
    done = [t for e, t in stamps if e == "done"]
    first = min(t for e, t in stamps if e == "running")
    return [b - a for a, b in itertools.pairwise(done)], wall, (done[-1] - first) / len(done)


def timed_run(root: Path, args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time of the command, and of its stage phase (first `running` to last `done`)."""
    stamps, wall = stream(root, args, env)
    first = min(t for e, t in stamps if e == "running")
    return wall, max(t for e, t in stamps if e == "done") - first


def spread(values: list[float], unit: str = "s", scale: float = 1.0) -> str:
    if not values:
        return "–"
    v = [x * scale for x in values]
    return f"{statistics.median(v):.{0 if unit == 'ms' else 2}f} {unit} ({min(v):.{0 if unit == 'ms' else 2}f}–" \
           f"{max(v):.{0 if unit == 'ms' else 2}f}, n={len(v)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--chain", type=int, default=20)
    ap.add_argument("--wide", type=int, default=40)
    ap.add_argument("--sleep", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--local-jobs", type=int, default=2)
    ap.add_argument("--no-local", action="store_true", help="skip the local pool's runs (cluster only)")
    args = ap.parse_args()

    from distributed import LocalCluster

    env = {**tool_env(), **DUMMY_CREDENTIALS}
    os.environ.update(DUMMY_CREDENTIALS)
    base = Path(tempfile.mkdtemp(prefix="pivot-bench-dask-"))
    results: dict[str, Any] = {"machine": machine_info(), "args": vars(args)}
    with SeaweedServer(BUCKET) as s3:
        workdir = base / "workers"
        workdir.mkdir()
        cwd = os.getcwd()
        os.chdir(workdir)  # the workers' cwd: not a project
        try:
            cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0", local_directory=str(workdir))
        finally:
            os.chdir(cwd)
        with cluster:
            dask = ["--scheduler", cluster.scheduler_address]
            warm = make_project(base, wide_pipeline(args.workers * 2, 0.0), s3.endpoint, env)
            stream(warm, dask, env)  # workers import s3fs and open their S3 connections once

            chain_dask, chain_local, chain_dask_wall, chain_local_wall = [], [], [], []
            forced_dask, forced_local = [], []
            chain_dask_per: list[float] = []
            chain_local_per: list[float] = []
            for _ in range(args.repeats):
                root = make_project(base, chain_pipeline(args.chain), s3.endpoint, env)
                gaps, wall, per = done_gaps(root, dask, env)
                chain_dask.append(statistics.median(gaps))
                chain_dask_wall.append(wall)
                chain_dask_per.append(per)
                forced_dask.append(statistics.median(done_gaps(root, [*dask, "--force"], env)[0]))
                if args.no_local:
                    continue
                root = make_project(base, chain_pipeline(args.chain), None, env)
                gaps, wall, per = done_gaps(root, ["-j", "1"], env)
                chain_local.append(statistics.median(gaps))
                chain_local_wall.append(wall)
                chain_local_per.append(per)
                forced_local.append(statistics.median(done_gaps(root, ["-j", "1", "--force"], env)[0]))

            wide_dask, wide_local, phase_dask, phase_local = [], [], [], []
            for _ in range(args.repeats if args.wide else 0):
                wall, phase = timed_run(make_project(base, wide_pipeline(args.wide, args.sleep), s3.endpoint, env),
                                        dask, env)
                wide_dask.append(wall)
                phase_dask.append(phase)
                if args.no_local:
                    continue
                wall, phase = timed_run(make_project(base, wide_pipeline(args.wide, args.sleep), None, env),
                                        ["-j", str(args.local_jobs)], env)
                wide_local.append(wall)
                phase_local.append(phase)

    results.update(chain_dask_gap=chain_dask, chain_local_gap=chain_local, forced_dask_gap=forced_dask,
                   forced_local_gap=forced_local, chain_dask_per=chain_dask_per,
                   chain_local_per=chain_local_per, chain_dask_wall=chain_dask_wall,
                   chain_local_wall=chain_local_wall, wide_dask=wide_dask, wide_local=wide_local,
                   phase_dask=phase_dask, phase_local=phase_local)
    path = write_results("dask", results)
    ideal_d = args.wide * args.sleep / args.workers
    ideal_l = args.wide * args.sleep / args.local_jobs
    rows = [
        [f"chain of {args.chain} trivial stages, first run: per-stage time (median gap between `done` events)",
         spread(chain_dask, "ms", 1000), spread(chain_local, "ms", 1000)],
        [f"chain of {args.chain}, first run: stage phase (first `running` to last `done`) per stage",
         spread(chain_dask_per, "ms", 1000), spread(chain_local_per, "ms", 1000)],
        [f"chain of {args.chain}, `--force` re-run: per-stage time", spread(forced_dask, "ms", 1000),
         spread(forced_local, "ms", 1000)],
        [f"chain of {args.chain}: whole command", spread(chain_dask_wall), spread(chain_local_wall)],
        [f"{args.wide} wide stages of {args.sleep} s: whole command "
         f"(ideal {ideal_d:.1f} s / {ideal_l:.1f} s + start-up)",
         spread(wide_dask), spread(wide_local)],
        [f"{args.wide} wide stages: stage phase, first `running` to last `done` (ideal {ideal_d:.1f} s / "
         f"{ideal_l:.1f} s)", spread(phase_dask), spread(phase_local)],
    ]
    if wide_local and wide_dask:
        rows.append(["speed-up of the wide run, cluster over local: whole command / stage phase",
                     f"{statistics.median(wide_local) / statistics.median(wide_dask):.2f}x / "
                     f"{statistics.median(phase_local) / statistics.median(phase_dask):.2f}x "
                     f"(ideal {args.workers / args.local_jobs:.2f}x)", ""])
    print(markdown_table(["", f"dask, {args.workers} workers (SeaweedFS S3)",
                          f"local pool (-j 1 / -j {args.local_jobs})"], rows))
    print(f"\nraw samples: {path}")


if __name__ == "__main__":
    main()
