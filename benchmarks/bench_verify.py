"""How long the pre-commit check takes on an up-to-date pipeline (target: under 1 s at 1,000 stages).

For each size N (default 100 and 1000, chain shape, from gen_pipelines.py) the project is
generated, run once, committed with its lock files, and given Pivot's pre-commit hook. Then, R
times each (whole commands, process start to exit, nothing changed in between):

- `pivot verify`                the CI check: every stage planned against its lock;
- `pivot verify --staged` cold  the pre-commit check doing the full check (the memo is invalidated
                                before each sample by touching .pivot/config.yaml): git status,
                                pipeline import, plan, staged-vs-workspace checks;
- `git commit` (hook) cold      a real `git commit --allow-empty` through the installed hook
                                (shell shim -> pivot -> the check), memo invalidated likewise;
- `pivot verify --staged` warm  the same once a clean full check recorded its memo: nothing the
                                check reads changed, so the pipeline is neither imported nor planned;
- `git commit` (hook) warm      the real commit on that path: what a user usually waits for;
- `git commit --no-verify`      the commit without hooks, for reference;
- `pivot status`                for comparison with the check's core.

By default children run with Python's bytecode cache allowed (PYTHONDONTWRITEBYTECODE removed
from their environment), as on a typical machine. `--env-as-is` keeps the environment unchanged.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (
    Measurement,
    failure_notes,
    fmt_measurement,
    machine_info,
    markdown_table,
    resolve_executable,
    run_timed,
    tool_env,
    tool_version,
    write_results,
)
from gen_pipelines import GenerationError, generate

COMMANDS = ("pivot verify", "pivot verify --staged cold", "git commit (hook) cold",
            "pivot verify --staged warm", "git commit (hook) warm", "git commit --no-verify", "pivot status")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def child_env(env_as_is: bool) -> dict[str, str]:
    env = tool_env()
    if not env_as_is:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def prepare(dest: Path, pivot: str, n: int, env: dict[str, str]) -> None:
    generate(dest, "pivot", "chain", n, pivot)
    for argv in ([pivot, "run"], ["git", "add", "-A"], ["git", "commit", "-q", "--no-verify", "-m", "locks"],
                 [pivot, "hooks", "install", "-t", "pre-commit"]):
        result = run_timed(argv, cwd=dest, timeout=1800, env=env)
        if not result.ok:
            raise GenerationError(result.failure())


def argv_for(command: str, pivot: str) -> list[str]:
    name = command.removesuffix(" cold").removesuffix(" warm")
    return {
        "pivot verify": [pivot, "verify"],
        "pivot verify --staged": [pivot, "verify", "--staged"],
        "git commit (hook)": ["git", "commit", "-q", "--allow-empty", "-m", "bench"],
        "git commit --no-verify": ["git", "commit", "-q", "--no-verify", "--allow-empty", "-m", "bench"],
        "pivot status": [pivot, "status"],
    }[name]


def invalidate_memo(dest: Path) -> None:
    """A changed ctime on a file the check reads: the next pre-commit check does the full check."""
    config = dest / ".pivot" / "config.yaml"
    os.utime(config, None)


def record_memo(dest: Path, pivot: str, env: dict[str, str]) -> None:
    time.sleep(2.1)  # the memo trusts no file younger than 2 s
    run_timed([pivot, "verify"], cwd=dest, env=env)
    check = run_timed([pivot, "verify", "--staged"], cwd=dest, env=env)
    if "nothing the check reads changed" not in check.stdout:
        log("  warning: the memo was not recorded; warm figures are full checks")


def bench_size(pivot: str, n: int, repeats: int, workdir: Path, env: dict[str, str]) -> list[Measurement]:
    dest = workdir / f"chain-{n}"
    config = {"stages": n, "shape": "chain"}
    results = [Measurement("pivot", c, dict(config)) for c in COMMANDS]
    log(f"preparing a {n}-stage project in {dest} ...")
    try:
        prepare(dest, pivot, n, env)
    except GenerationError as exc:
        for m in results:
            m.fail(str(exc))
        return results
    if not (dest / ".git" / "hooks" / "pre-commit").is_file():
        for m in results:
            m.fail("pivot hooks install did not install a pre-commit hook")
        return results
    for m in results:
        argv = argv_for(m.metric, pivot)
        if m.metric.endswith("warm") and not any(r.metric.endswith("warm") and r.samples for r in results):
            record_memo(dest, pivot, env)
        run_timed(argv, cwd=dest, env=env)  # warm-up: page cache, bytecode, state.db
        for _ in range(repeats):
            if m.metric.endswith("cold"):
                invalidate_memo(dest)
            if not m.add(run_timed(argv, cwd=dest, env=env)):
                break
        log(f"  {m.metric}: {fmt_measurement(m)}")
    return results


def report(results: list[Measurement], sizes: list[int]) -> str:
    rows = []
    for command in COMMANDS:
        row = [f"`{command}`"]
        for n in sizes:
            m = next((r for r in results if r.metric == command and r.config.get("stages") == n), None)
            row.append(fmt_measurement(m))
        rows.append(row)
    header = ["command", *(f"{n} stages" for n in sizes)]
    return markdown_table(header, rows) + failure_notes(results)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pivot", help="pivot executable (default: $PIVOT, else `pivot` on PATH)")
    p.add_argument("--stages", default="100,1000", help="comma-separated pipeline sizes (default 100,1000)")
    p.add_argument("-r", "--repeats", type=int, default=7, help="samples per command (default 7)")
    p.add_argument("--env-as-is", action="store_true", help="keep PYTHONDONTWRITEBYTECODE if it is set")
    p.add_argument("--workdir", type=Path, help="where projects are generated (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)
    pivot = resolve_executable(args.pivot, "PIVOT", "pivot")
    if pivot is None:
        log("error: no pivot executable found (use --pivot or $PIVOT)")
        return 2
    sizes = [int(x) for x in args.stages.split(",") if x.strip()]
    env = child_env(args.env_as_is)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pivot-bench-verify-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = [m for n in sizes for m in bench_size(pivot, n, args.repeats, workdir, env)]
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report(results, sizes))
    path = write_results("verify", {
        "machine": machine_info(),
        "load_average": os.getloadavg(),
        "settings": {"repeats": args.repeats, "stages": sizes, "bytecode_cache": "PYTHONDONTWRITEBYTECODE" not in env},
        "executables": {"pivot": pivot, "pivot_version": tool_version([pivot, "--version"])},
        "results": [m.to_json() for m in results],
    })
    log(f"raw samples: {path}")
    return 0 if all(m.status == "ok" for m in results) else 1


if __name__ == "__main__":
    sys.exit(main())
