"""Run cache benchmark (issue 18), against S3 served by SeaweedFS on localhost (tests/seaweed.py).

1. restore: a pipeline of `--stages` stages (default 1,000, `--shape fanout`: one stage, then
   the others all reading its output). Clone A runs it and pushes (objects and run records); a
   fresh clone B, at the commit before any lock was committed (so nothing is "up to date"), runs
   `pivot run`: every stage should be restored from the remote's run records, none executed.
   Reported: wall time, stages executed / restored, and the S3 requests `pivot run` made
   (through tests/seaweed.py's CountingProxy; `--no-count` talks to SeaweedFS directly).
   Target: at most 5 s on the 2-core machine.
2. miss overhead: a `--small`-stage pipeline (default 10) in fresh clones against an empty
   remote, so every lookup misses: `pivot run` against `pivot run --no-run-cache`, median of
   `--repeat` runs each. Target: at most 50 ms extra.

    .venv/bin/python benchmarks/bench_run_cache.py [--stages 1000] [--small 10] [--repeat 5]
        [--shape fanout|chain] [--no-count]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench_remote import ProxyProcess
from benchlib import machine_info, markdown_table, run_timed, tool_env, write_results
from gen_pipelines import generate
from seaweed import DUMMY_CREDENTIALS, SeaweedServer

PIVOT = str(Path(sys.executable).parent / "pivot")
BUCKET = "bench"


def sh(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    res = run_timed(argv, cwd=cwd, env=env)
    if not res.ok:
        raise SystemExit(res.failure())
    return res.stdout


def origin(dest: Path, shape: str, n: int, url: str, endpoint: str, env: dict[str, str]) -> Path:
    """A generated pipeline with a default remote, committed; no lock file."""
    generate(dest, "pivot", shape, n, PIVOT)  # type: ignore[arg-type]  # argparse checked the choice
    sh([PIVOT, "remote", "add", "store", url, "--default", "-o", f"endpoint_url={endpoint}"], dest, env)
    sh(["git", "add", "-A"], dest, env)
    sh(["git", "commit", "-q", "-m", "remote"], dest, env)
    return dest


def clone(src: Path, dest: Path, env: dict[str, str]) -> Path:
    sh(["git", "clone", "-q", str(src), str(dest)], src.parent, env)
    return dest


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def bench_restore(work: Path, args: argparse.Namespace, server: SeaweedServer, endpoint: str,
                  proxy: ProxyProcess | None, env: dict[str, str]) -> dict[str, Any]:
    url = f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"
    src = origin(work / "origin", args.shape, args.stages, url, endpoint, env)
    a = clone(src, work / "a", env)
    first = run_timed([PIVOT, "run"], cwd=a, env=env)
    assert first.ok, first.failure()
    push = run_timed([PIVOT, "push", "--run-cache"], cwd=a, env=env)
    assert push.ok, push.failure()
    b = clone(src, work / "b", env)
    if proxy is not None:
        proxy.reset()
    res = run_timed([PIVOT, "run", "--json"], cwd=b, env=env)
    assert res.ok, res.failure()
    got = events(res.stdout)
    summary = got[-1]
    return {"stages": args.stages, "shape": args.shape, "first_run_s": round(first.seconds, 3),
            "push_s": round(push.seconds, 3), "restore_run_s": round(res.seconds, 3),
            "executed": len(summary["ran"]), "restored": len(summary["restored"]),
            "lookups": sum(e["keys"] for e in got if e["event"] == "run_cache_lookup"),
            "lookup_s": round(sum(e["seconds"] + e["opening"] for e in got if e["event"] == "run_cache_lookup"), 3),
            "requests": proxy.count() if proxy is not None else None}


def bench_overhead(work: Path, args: argparse.Namespace, endpoint: str, env: dict[str, str]) -> dict[str, Any]:
    url = f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"  # stays empty: every lookup misses
    src = origin(work / "small", args.shape, args.small, url, endpoint, env)
    times: dict[str, list[float]] = {"lookup": [], "no-run-cache": [], "requests": [], "opening": []}
    for i in range(args.repeat):
        for label, extra in (("lookup", []), ("no-run-cache", ["--no-run-cache"])):
            c = clone(src, work / f"small-{label}-{i}", env)
            res = run_timed([PIVOT, "run", "--json", *extra], cwd=c, env=env)
            assert res.ok, res.failure()
            got = events(res.stdout)
            assert not any(e["event"] == "restored" for e in got)
            times[label].append(res.seconds)
            if label == "lookup":  # what the lookups' own requests took, and opening the client
                times["requests"].append(sum(e["seconds"] for e in got if e["event"] == "run_cache_lookup"))
                times["opening"].append(sum(e["opening"] for e in got if e["event"] == "run_cache_lookup"))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"stages": args.small, "repeat": args.repeat, "median_lookup_s": round(med["lookup"], 3),
            "median_no_run_cache_s": round(med["no-run-cache"], 3),
            "extra_ms": round(1000 * (med["lookup"] - med["no-run-cache"]), 1),
            "lookup_requests_ms": round(1000 * med["requests"], 1),
            "client_opening_ms": round(1000 * med["opening"], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", type=int, default=1000)
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--shape", choices=["fanout", "chain"], default="fanout")
    parser.add_argument("--no-count", action="store_true", help="talk to SeaweedFS directly (no request count)")
    args = parser.parse_args()
    env = {**tool_env(), **DUMMY_CREDENTIALS}
    os.environ.update(DUMMY_CREDENTIALS)
    with SeaweedServer(BUCKET) as server, tempfile.TemporaryDirectory(prefix="bench-runcache-") as tmp:
        proxy = None if args.no_count else ProxyProcess(server.endpoint)
        try:
            endpoint = proxy.endpoint if proxy is not None else server.endpoint
            restore = bench_restore(Path(tmp), args, server, endpoint, proxy, env)
            overhead = bench_overhead(Path(tmp), args, server.endpoint, env)
        finally:
            if proxy is not None:
                proxy.stop()
    print(markdown_table(["case", "figure"], [
        [f"restore {restore['stages']} stages ({restore['shape']}), fresh clone", f"{restore['restore_run_s']} s"],
        ["  executed / restored", f"{restore['executed']} / {restore['restored']}"],
        ["  S3 requests", str(restore["requests"])],
        ["  of which run-cache lookups (s)", str(restore["lookup_s"])],
        [f"{overhead['stages']}-stage all-miss: run vs --no-run-cache",
         f"{overhead['median_lookup_s']} s vs {overhead['median_no_run_cache_s']} s "
         f"({overhead['extra_ms']} ms extra)"],
        ["  of which: lookup requests / opening the S3 client",
         f"{overhead['lookup_requests_ms']} ms / {overhead['client_opening_ms']} ms"],
    ]))
    path = write_results("run_cache", {"machine": machine_info(), "restore": restore, "overhead": overhead})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
