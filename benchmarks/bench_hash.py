"""Hashing throughput and directory re-status cost.

1. Hashing: a file of --size bytes (default 1 GiB) of random data is written to a
   temp dir and read once to warm the page cache. Then, R times each:
   - `cat FILE > /dev/null` (wall time of the command: the read-only baseline);
   - `pivot.hashing.hash_file(FILE)` (xxh3-128), timed in-process with
     time.perf_counter in one Python process, so interpreter start and imports
     are excluded (one untimed warm-up call first);
   - `hashlib.md5` over the same file in the same process, for reference (MD5 is
     the hash DVC uses).
   Reported: median (min–max) and throughput, and hash/cat throughput ratio.

2. Directory re-status: a Pivot project with one stage whose output is a
   directory of --files small files (default 10,000) is run once, then
   `pivot status` is timed R times, next to `pivot status` of a trivial 1-stage
   project, so the cost of the directory shows as the difference. The same is
   done with DVC (`dvc repro` / `dvc status`) when a dvc executable is found.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchlib import (
    Measurement,
    failure_notes,
    fmt_measurement,
    fmt_ratio,
    fmt_seconds,
    machine_info,
    markdown_table,
    resolve_executable,
    run_timed,
    tool_env,
    tool_version,
    write_results,
)
from gen_pipelines import GenerationError, Shape, Tool, final_output, generate

GIB = 1024**3
RUN_ARGS: dict[Tool, list[str]] = {"pivot": ["run"], "dvc": ["repro"]}

# Runs in the Pivot interpreter; prints {"pivot": [seconds…], "md5": [seconds…]}.
HASH_SCRIPT = """
import hashlib, json, sys, time
from pivot.hashing import hash_file

def md5_file(path):
    h = hashlib.md5()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()

path, repeats, with_md5 = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
out = {"pivot": [], "md5": []}
for name, fn in (("pivot", hash_file), ("md5", md5_file)):
    if name == "md5" and not with_md5:
        continue
    fn(path)  # warm-up, not timed
    for _ in range(repeats):
        start = time.perf_counter()
        fn(path)
        out[name].append(time.perf_counter() - start)
print(json.dumps(out))
"""


def parse_size(text: str) -> int:
    """'1G', '256M', '4096' -> bytes (binary units)."""
    units = {"K": 1024, "M": 1024**2, "G": GIB}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_random_file(path: Path, size: int, chunk: int = 64 << 20) -> None:
    with open(path, "wb") as f:
        remaining = size
        while remaining > 0:
            n = min(chunk, remaining)
            f.write(os.urandom(n))
            remaining -= n


def pivot_python(pivot_exe: str | None, option: str | None) -> str:
    """The interpreter that has `pivot` installed: --python, else the one beside pivot."""
    if option:
        return option
    if pivot_exe:
        beside = Path(pivot_exe).parent / "python"
        if beside.exists():
            return str(beside)
    return sys.executable


def bench_hash(path: Path, python: str, repeats: int, with_md5: bool, timeout: float) -> list[Measurement]:
    size = path.stat().st_size
    cat = Measurement("cat", "cat FILE > /dev/null", {"bytes": size})
    pivot = Measurement("pivot", "pivot.hashing.hash_file (xxh3-128)", {"bytes": size})
    md5 = Measurement("python", "hashlib.md5 (DVC's hash), same process", {"bytes": size})
    log("warming the page cache …")
    run_timed(["sh", "-c", 'cat "$1" > /dev/null', "sh", str(path)], timeout=timeout)
    log("timing cat …")
    for _ in range(repeats):
        if not cat.add(run_timed(["sh", "-c", 'cat "$1" > /dev/null', "sh", str(path)], timeout=timeout)):
            break
    log("timing hash_file …")
    result = run_timed([python, "-c", HASH_SCRIPT, str(path), str(repeats), "1" if with_md5 else "0"],
                       timeout=timeout * repeats * 2)
    if not result.ok:
        pivot.fail(result.failure())
        md5.skip("hash script failed")
        return [cat, pivot, md5]
    samples = json.loads(result.stdout.strip().splitlines()[-1])
    pivot.samples = samples["pivot"]
    md5.samples = samples["md5"]
    if not with_md5:
        md5.skip("--no-md5")
    return [cat, pivot, md5]


def hash_report(results: list[Measurement]) -> str:
    cat = results[0]
    rows = []
    for m in results:
        if m.median is None:
            rows.append([m.metric, fmt_measurement(m), "—", "—"])
            continue
        gib_s = m.config["bytes"] / GIB / m.median
        ratio = fmt_ratio(cat, m) if m is not cat else "1.0×"
        rows.append([m.metric, fmt_measurement(m), f"{gib_s:.2f} GiB/s", ratio])
    return markdown_table(["measurement", "median (min–max)", "throughput", "throughput vs cat"], rows)


def status_of_project(tool: Tool, exe: str, shape: Shape, n: int, label: str,
                      workdir: Path, repeats: int, timeout: float) -> Measurement:
    """Generate, run once, then time `status` ``repeats`` times."""
    m = Measurement(tool, label, {"shape": shape, "n": n})
    dest = workdir / f"{tool}-{shape}-{n}"
    try:
        generate(dest, tool, shape, n, exe)
    except GenerationError as exc:
        m.fail(f"generating the project: {exc}")
        return m
    log(f"[{tool}] {label}: running the pipeline once …")
    run = run_timed([exe, *RUN_ARGS[tool]], cwd=dest, timeout=timeout, env=tool_env())
    if not run.ok:
        m.fail(f"first run: {run.failure()}")
    elif not (dest / final_output(shape, n)).exists():
        m.fail(f"the run exited 0 but {final_output(shape, n)} is missing")
    else:
        log(f"[{tool}] {label}: timing status …")
        for _ in range(repeats):
            if not m.add(run_timed([exe, "status"], cwd=dest, timeout=timeout, env=tool_env())):
                break
    shutil.rmtree(dest, ignore_errors=True)
    return m


def bench_dir_status(exes: dict[Tool, str | None], files: int, workdir: Path,
                     repeats: int, timeout: float) -> list[Measurement]:
    results: list[Measurement] = []
    for tool, exe in exes.items():
        if exe is None:
            for label in ("status, 1-stage project", f"status, {files}-file directory output"):
                m = Measurement(tool, label)
                m.skip(f"no {tool} executable")
                results.append(m)
            continue
        results.append(status_of_project(tool, exe, "chain", 1, "status, 1-stage project",
                                         workdir, repeats, timeout))
        results.append(status_of_project(tool, exe, "dir", files, f"status, {files}-file directory output",
                                         workdir, repeats, timeout))
    return results


def dir_report(results: list[Measurement]) -> str:
    by = {(m.tool, m.metric): m for m in results}
    labels = list(dict.fromkeys(m.metric for m in results))
    rows = [[label, fmt_measurement(by.get(("pivot", label))), fmt_measurement(by.get(("dvc", label))),
             fmt_ratio(by.get(("dvc", label)), by.get(("pivot", label)))] for label in labels]
    diffs = []
    for tool in ("pivot", "dvc"):
        base, big = (by.get((tool, label)) for label in labels[:2])
        base_s = base.median if base is not None else None
        big_s = big.median if big is not None else None
        diffs.append(fmt_seconds(big_s - base_s) if base_s is not None and big_s is not None else "—")
    rows.append(["difference (cost of the directory)", *diffs, "—"])
    return markdown_table(["measurement", "Pivot median (min–max)", "DVC median (min–max)", "DVC/Pivot"], rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pivot", help="pivot executable (default: $PIVOT, else `pivot` on PATH)")
    p.add_argument("--python", help="interpreter with pivot installed (default: `python` beside pivot)")
    p.add_argument("--dvc", help="dvc executable (default: $DVC, else `dvc` on PATH)")
    p.add_argument("--size", default="1G", help="hashed file size, e.g. 1G, 256M (default 1G)")
    p.add_argument("--files", type=int, default=10_000, help="files in the directory output (default 10000)")
    p.add_argument("-r", "--repeats", type=int, default=5, help="repeats per measurement (default 5)")
    p.add_argument("--no-md5", action="store_true", help="skip the hashlib.md5 reference")
    p.add_argument("--skip-hash", action="store_true", help="skip the hashing benchmark")
    p.add_argument("--skip-dir", action="store_true", help="skip the directory re-status benchmark")
    p.add_argument("--timeout", type=float, default=900, help="cap per command, seconds (default 900)")
    p.add_argument("--workdir", type=Path, help="where files/projects are created (default: a temp dir)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pivot = resolve_executable(args.pivot, "PIVOT", "pivot")
    dvc = resolve_executable(args.dvc, "DVC", "dvc")
    for tool, exe in (("pivot", pivot), ("dvc", dvc)):
        if exe is None:
            log(f"{tool}: executable not found (--{tool} or ${tool.upper()}); skipping the {tool} side")
    workdir = Path(tempfile.mkdtemp(prefix="pivot-bench-hash-", dir=args.workdir))
    payload: dict[str, Any] = {"machine": machine_info(), "settings": {k: str(v) for k, v in vars(args).items()},
                               "versions": {t: tool_version([e, "--version"]) for t, e in
                                            (("pivot", pivot), ("dvc", dvc)) if e}}
    try:
        if not args.skip_hash:
            path = workdir / "big.bin"
            log(f"writing {args.size} of random data to {path} …")
            write_random_file(path, parse_size(args.size))
            hashes = bench_hash(path, pivot_python(pivot, args.python), args.repeats, not args.no_md5, args.timeout)
            path.unlink()
            print(hash_report(hashes) + failure_notes(hashes) + "\n")
            payload["hash"] = [m.to_json() for m in hashes]
        if not args.skip_dir:
            dirs = bench_dir_status({"pivot": pivot, "dvc": dvc}, args.files, workdir, args.repeats, args.timeout)
            print(dir_report(dirs) + failure_notes(dirs) + "\n")
            payload["dir_status"] = [m.to_json() for m in dirs]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"JSON: {write_results('hash', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
