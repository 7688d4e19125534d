"""Pivot vs DVC on the same synthetic pipelines (see gen_pipelines.py).

For each shape (chain, fanout) and size N, and for each tool:

- first run:  `pivot run` / `dvc repro` on a freshly generated project
              (a new project per repeat);
- no-op run:  the same command again, nothing having changed (R repeats);
- status:     `pivot status` / `dvc status` on the up-to-date project (R repeats).

Plus CLI start-up: `pivot --help` / `dvc --help` (R repeats).

Each sample is the wall time of the whole command (process start to exit),
taken with time.perf_counter around subprocess. Results: a markdown table of
median (min–max), the median per stage (ms/stage, the figure issue 19's
targets are stated in), the CPU time per stage (user + system, workers
included: steadier than wall time on a loaded machine), the peak resident set
of the command and the DVC/Pivot ratio of medians on stdout, and the raw samples as JSON in benchmarks/results/.

Peak RSS is the kernel's ru_maxrss of the command as `wait4` reports it (what
`/usr/bin/time -v` prints): the largest resident set of the command's process
or of any process it waited for (Pivot's workers), over all samples of the row.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from benchlib import (
    Measurement,
    failure_notes,
    fmt_measurement,
    fmt_ratio,
    machine_info,
    markdown_table,
    resolve_executable,
    run_timed,
    tool_env,
    tool_version,
    write_results,
)
from gen_pipelines import GenerationError, Shape, Tool, final_output, generate

RUN_ARGS: dict[Tool, list[str]] = {"pivot": ["run"], "dvc": ["repro"]}
STATUS_ARGS: dict[Tool, list[str]] = {"pivot": ["status"], "dvc": ["status"]}
METRICS = ("first run", "no-op run", "status")


@dataclass(frozen=True)
class Settings:
    repeats: int
    pivot_first_repeats: int
    dvc_first_repeats: int | None  # None: 3 up to 100 stages, else 1
    timeout: float
    workdir: Path

    def first_repeats(self, tool: Tool, n: int) -> int:
        if tool == "pivot":
            return self.pivot_first_repeats
        if self.dvc_first_repeats is not None:
            return self.dvc_first_repeats
        return 3 if n <= 100 else 1


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_repeated(m: Measurement, argv: list[str], cwd: Path | None, s: Settings) -> None:
    for _ in range(s.repeats):
        if not m.add(run_timed(argv, cwd=cwd, timeout=s.timeout, env=tool_env())):
            return


def first_runs(tool: Tool, exe: str, shape: Shape, n: int, s: Settings, m: Measurement) -> Path | None:
    """Time the first run on fresh projects; return the last project (None on failure)."""
    project: Path | None = None
    for k in range(s.first_repeats(tool, n)):
        dest = s.workdir / f"{tool}-{shape}-{n}-{k}"
        try:
            generate(dest, tool, shape, n, exe)
        except GenerationError as exc:
            m.fail(f"generating the project: {exc}")
            return None
        if not m.add(run_timed([exe, *RUN_ARGS[tool]], cwd=dest, timeout=s.timeout, env=tool_env())):
            return None
        if not (dest / final_output(shape, n)).exists():
            m.fail(f"the run exited 0 but {final_output(shape, n)} is missing")
            return None
        if project is not None:
            shutil.rmtree(project, ignore_errors=True)
        project = dest
    return project


def bench_pipeline(tool: Tool, exe: str, shape: Shape, n: int, s: Settings) -> list[Measurement]:
    config: dict[str, Any] = {"shape": shape, "stages": n}
    first, noop, status = (Measurement(tool, metric, dict(config)) for metric in METRICS)
    log(f"[{tool}] {shape} N={n}: first run …")
    project = first_runs(tool, exe, shape, n, s, first)
    if project is None:
        noop.skip("first run failed")
        status.skip("first run failed")
        return [first, noop, status]
    final = project / final_output(shape, n)
    mtime = final.stat().st_mtime_ns
    log(f"[{tool}] {shape} N={n}: no-op run …")
    measure_repeated(noop, [exe, *RUN_ARGS[tool]], project, s)
    if noop.status == "ok" and final.stat().st_mtime_ns != mtime:
        noop.fail(f"the no-op run rewrote {final_output(shape, n)}: stages re-ran")
    log(f"[{tool}] {shape} N={n}: status …")
    measure_repeated(status, [exe, *STATUS_ARGS[tool]], project, s)
    shutil.rmtree(project, ignore_errors=True)
    return [first, noop, status]


def bench_startup(tool: Tool, exe: str, s: Settings) -> Measurement:
    m = Measurement(tool, "startup (--help)")
    log(f"[{tool}] startup …")
    measure_repeated(m, [exe, "--help"], s.workdir, s)
    return m


def skipped(tool: Tool, metric: str, config: dict[str, Any], reason: str) -> Measurement:
    m = Measurement(tool, metric, dict(config))
    m.skip(reason)
    return m


def run_all(exes: dict[Tool, str | None], shapes: list[Shape], sizes: list[int],
            dvc_max: int, s: Settings) -> list[Measurement]:
    results: list[Measurement] = []
    for tool, exe in exes.items():
        if exe is None:
            results.append(skipped(tool, "startup (--help)", {}, f"no {tool} executable"))
            continue
        results.append(bench_startup(tool, exe, s))
    for n in sizes:
        for shape in shapes:
            for tool, exe in exes.items():
                config = {"shape": shape, "stages": n}
                if exe is None:
                    results += [skipped(tool, m, config, f"no {tool} executable") for m in METRICS]
                elif tool == "dvc" and n > dvc_max:
                    results += [skipped(tool, m, config, f"N > --dvc-max-stages {dvc_max}") for m in METRICS]
                else:
                    results += bench_pipeline(tool, exe, shape, n, s)
    return results


def find(results: list[Measurement], tool: str, metric: str, config: dict[str, Any]) -> Measurement | None:
    return next((m for m in results if m.tool == tool and m.metric == metric and m.config == config), None)


def per_stage(m: Measurement | None, config: dict[str, Any]) -> str:
    """The median in milliseconds per stage, or "—"."""
    stages = config.get("stages")
    if m is None or m.median is None or not isinstance(stages, int):
        return "—"
    return f"{m.median * 1000 / stages:.2f}"


def cpu_per_stage(m: Measurement | None, config: dict[str, Any]) -> str:
    """The median CPU time (user + system, workers included) in milliseconds per stage: less
    sensitive than wall time to other load on a shared machine."""
    stages = config.get("stages")
    if m is None or m.median is None or not m.cpu_samples or not isinstance(stages, int):
        return "—"
    return f"{statistics.median(m.cpu_samples) * 1000 / stages:.2f}"


def peak_rss(m: Measurement | None) -> str:
    return "—" if m is None or m.median is None else f"{m.max_rss_kib / 1024:.0f} MiB"


def report(results: list[Measurement]) -> str:
    keys: list[tuple[str, tuple[tuple[str, Any], ...]]] = []
    for m in results:
        key = (m.metric, tuple(m.config.items()))
        if key not in keys:
            keys.append(key)
    rows = []
    for metric, items in keys:
        config = dict(items)
        pivot, dvc = find(results, "pivot", metric, config), find(results, "dvc", metric, config)
        rows.append([str(config.get("shape", "—")), str(config.get("stages", "—")), metric,
                     fmt_measurement(pivot), per_stage(pivot, config), cpu_per_stage(pivot, config), peak_rss(pivot),
                     fmt_measurement(dvc), per_stage(dvc, config), peak_rss(dvc), fmt_ratio(dvc, pivot)])
    table = markdown_table(["shape", "N", "measurement", "Pivot median (min–max)", "Pivot ms/stage",
                            "Pivot CPU ms/stage", "Pivot peak RSS", "DVC median (min–max)", "DVC ms/stage",
                            "DVC peak RSS", "DVC/Pivot"], rows)
    return table + failure_notes(results)


def pick(text: str, allowed: tuple[str, ...], option: str) -> list[str]:
    """The comma-separated choices of ``text``, in ``allowed`` order; exit on an unknown one."""
    chosen = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in chosen if x not in allowed]
    if unknown:
        sys.exit(f"error: {option}: unknown {', '.join(unknown)} (choose from {', '.join(allowed)})")
    return [x for x in allowed if x in chosen]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pivot", help="pivot executable (default: $PIVOT, else `pivot` on PATH)")
    p.add_argument("--dvc", help="dvc executable (default: $DVC, else `dvc` on PATH)")
    p.add_argument("--tools", default="pivot,dvc", help="comma-separated subset of pivot,dvc")
    p.add_argument("--stages", default="100,1000", help="comma-separated pipeline sizes (default 100,1000)")
    p.add_argument("--shapes", default="chain,fanout", help="comma-separated subset of chain,fanout")
    p.add_argument("--dvc-max-stages", type=int, default=500, help="skip DVC above this N (default 500)")
    p.add_argument("-r", "--repeats", type=int, default=5, help="no-op/status/startup repeats (default 5)")
    p.add_argument("--first-repeats", type=int, default=3, help="Pivot first-run repeats (default 3)")
    p.add_argument("--dvc-first-repeats", type=int, default=None,
                   help="DVC first-run repeats (default: 3 for N<=100, else 1)")
    p.add_argument("--timeout", type=float, default=900, help="cap per command, seconds (default 900)")
    p.add_argument("--workdir", type=Path, help="where projects are generated (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tools = cast(list[Tool], pick(args.tools, ("pivot", "dvc"), "--tools"))
    shapes = cast(list[Shape], pick(args.shapes, ("chain", "fanout"), "--shapes"))
    sizes = [int(x) for x in args.stages.split(",") if x]
    exes: dict[Tool, str | None] = {
        t: resolve_executable(getattr(args, t), t.upper(), t) for t in tools
    }
    for tool, exe in exes.items():
        if exe is None:
            log(f"{tool}: executable not found (--{tool} or ${tool.upper()}); skipping the {tool} side")
    workdir = Path(tempfile.mkdtemp(prefix="pivot-bench-", dir=args.workdir))
    settings = Settings(args.repeats, args.first_repeats, args.dvc_first_repeats, args.timeout, workdir)
    try:
        results = run_all(exes, shapes, sizes, args.dvc_max_stages, settings)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report(results))
    versions = {t: tool_version([exe, "--version"]) for t, exe in exes.items() if exe}
    path = write_results("core", {
        "machine": machine_info(), "versions": versions, "executables": exes,
        "settings": {k: str(v) for k, v in vars(args).items()},
        "results": [m.to_json() for m in results],
    })
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
