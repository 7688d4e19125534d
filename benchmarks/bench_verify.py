"""How long the commands of an up-to-date pipeline take: no-op run, status and the pre-commit check
(issue 19's targets at 10,000 stages: run and status at most 0.5 s, the check through a real
`git commit` at most 1 s).

For each shape (chain, fanout) and size N (default 100 and 1000, from gen_pipelines.py) the project
is generated, run once, committed with its lock files, and given Pivot's pre-commit hook (kept in
--workdir with --keep, and reused by a later invocation: a 10,000-stage first run takes minutes).
Then, R times each (whole commands, process start to exit, nothing changed in between):

- `pivot verify`                the CI check: every stage planned against its lock;
- `pivot verify --staged` cold  the pre-commit check doing the full check (the memo is invalidated
                                before each sample by touching .pivot/config.yaml): git status,
                                pipeline import, plan, staged-vs-workspace checks;
- `git commit` (hook) cold      a real `git commit --allow-empty` through the installed hook
                                (shell shim -> pivot -> the check), memo invalidated likewise;
- `pivot verify --staged` warm  the same once a clean full check recorded its memo: nothing the
                                check reads changed, so the pipeline is neither imported nor planned;
- `git commit` (hook) warm      the real commit on that path: what a user usually waits for;
- `... pipeline.py touched`     `pivot verify --staged` and the real commit after pipeline.py's
                                mtime changed but not its bytes (an editor saving an unchanged
                                file, a checkout back and forth): the memo remembers the modules'
                                bytes (since this case was added), so it still holds;
- `... pipeline.py edited`      the same after one function of pipeline.py was edited and staged
                                (a comment on its `def` line, new each sample: the stages stay up to
                                date, but the module's bytes are new, so it is compiled and
                                summarised again, where it changed); the untimed check before
                                the edit follows the previous sample's edit within 2 s, so it
                                records no memo (too recent to trust): this is a full check;
- `... pipeline.py edited, memo` the same edit with the memo of a clean full check in place (as
                                when a commit follows an earlier one by more than 2 s): only the
                                modules' bytes changed, and no stage's code or definition, so
                                the check passes without a plan (checkmemo.code_only);
- `git commit --no-verify`      the commit without hooks, for reference;
- `pivot status`                what `pivot run` would do;
- `pivot run` (no-op)           nothing to run: every stage is decided and skipped.

With --baseline PIVOT2, every sample is taken with both executables, alternating which goes
first, on the same project (the hook is installed for the executable being measured, and a warm
sample is preceded by an untimed check of that executable recording its memo), and the table
shows both medians and their ratio: paired measurements for a before/after comparison on a
loaded machine.

By default children run with Python's bytecode cache allowed (PYTHONDONTWRITEBYTECODE removed
from their environment), as on a typical machine. `--env-as-is` keeps the environment unchanged.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

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
from gen_pipelines import GenerationError, Shape, generate

COMMANDS = ("pivot run (no-op)", "pivot status", "pivot verify", "pivot verify --staged cold",
            "git commit (hook) cold", "pivot verify --staged warm", "git commit (hook) warm",
            "pivot verify --staged pipeline.py touched", "git commit (hook) pipeline.py touched",
            "pivot verify --staged pipeline.py edited", "git commit (hook) pipeline.py edited",
            "pivot verify --staged pipeline.py edited, memo", "git commit (hook) pipeline.py edited, memo",
            "git commit --no-verify")
CHANGES = (" cold", " warm", " pipeline.py touched", " pipeline.py edited", " pipeline.py edited, memo")
SHAPES = ("chain", "fanout")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def child_env(env_as_is: bool) -> dict[str, str]:
    env = tool_env()
    if not env_as_is:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def prepare(dest: Path, pivot: str, shape: Shape, n: int, env: dict[str, str]) -> None:
    if (dest / ".git").is_dir() and (dest / ".pivot" / "stages").is_dir():
        log(f"reusing {dest}")
        use(dest, pivot, env)
        return
    generate(dest, "pivot", shape, n, pivot)
    for argv in ([pivot, "run"], ["git", "add", "-A"], ["git", "commit", "-q", "--no-verify", "-m", "locks"],
                 [pivot, "hooks", "install", "-t", "pre-commit"]):
        result = run_timed(argv, cwd=dest, timeout=1800, env=env)
        if not result.ok:
            raise GenerationError(result.failure())


def argv_for(command: str, pivot: str) -> list[str]:
    name = next((command.removesuffix(c) for c in CHANGES if command.endswith(c)), command)
    return {
        "pivot verify": [pivot, "verify"],
        "pivot verify --staged": [pivot, "verify", "--staged"],
        "git commit (hook)": ["git", "commit", "-q", "--allow-empty", "-m", "bench"],
        "git commit --no-verify": ["git", "commit", "-q", "--no-verify", "--allow-empty", "-m", "bench"],
        "pivot status": [pivot, "status"],
        "pivot run (no-op)": [pivot, "run"],
    }[name]


def invalidate_memo(dest: Path) -> None:
    """A changed ctime on a file the check reads: the next pre-commit check does the full check."""
    config = dest / ".pivot" / "config.yaml"
    os.utime(config, None)


def record_memo(dest: Path, pivot: str, env: dict[str, str]) -> None:
    time.sleep(2.1)  # the memo trusts no file younger than 2 s
    check = run_timed([pivot, "verify", "--staged"], cwd=dest, env=env)
    if "nothing the check reads changed" not in check.stdout:
        check = run_timed([pivot, "verify", "--staged"], cwd=dest, env=env)
    if "nothing the check reads changed" not in check.stdout:
        log("  warning: the memo was not recorded; warm figures are full checks")


def change_pipeline(dest: Path, pivot: str, env: dict[str, str], stages: int, edit: bool, memo: bool = False) -> None:
    """After an untimed check with `pivot` (its caches then hold the current pipeline.py; with
    `memo`, 2 s later, so that it records its memo): set pipeline.py's mtime to now, or edit the
    middle stage's function (a new comment on its `def` line) and stage the edit."""
    if memo:
        record_memo(dest, pivot, env)
    else:
        run_timed([pivot, "verify", "--staged"], cwd=dest, env=env)
    path = dest / "pipeline.py"
    if not edit:
        os.utime(path, None)
        return
    name = f"s{stages // 2:04d}"
    text = re.sub(rf"^def {name}\(\):.*$", f"def {name}():  # edited {time.time_ns()}", path.read_text(),
                  count=1, flags=re.MULTILINE)
    path.write_text(text)
    run_timed(["git", "add", "pipeline.py"], cwd=dest, env=env)


def use(dest: Path, pivot: str, env: dict[str, str]) -> None:
    """The pre-commit hook of `dest` runs `pivot` (the hook records the executable that installs it)."""
    run_timed([pivot, "hooks", "install", "-t", "pre-commit"], cwd=dest, env=env)


def sample(m: Measurement, dest: Path, pivot: str, env: dict[str, str]) -> bool:
    use(dest, pivot, env)
    if m.metric.endswith("warm"):
        record_memo(dest, pivot, env)
    if m.metric.endswith("cold"):
        invalidate_memo(dest)
    if m.metric.endswith(("touched", "edited", "memo")):
        change_pipeline(dest, pivot, env, int(m.config["stages"]), not m.metric.endswith("touched"),
                        m.metric.endswith("memo"))
    return m.add(run_timed(argv_for(m.metric, pivot), cwd=dest, env=env))


def bench_size(exes: dict[str, str], shape: Shape, n: int, repeats: int, workdir: Path,
               env: dict[str, str]) -> list[Measurement]:
    """`exes`: label -> executable (the first generates the project)."""
    dest = workdir / f"{shape}-{n}"
    config = {"stages": n, "shape": shape}
    results = {(label, c): Measurement(label, c, dict(config)) for c in COMMANDS for label in exes}
    log(f"preparing a {n}-stage {shape} project in {dest} ...")
    try:
        prepare(dest, next(iter(exes.values())), shape, n, env)
    except GenerationError as exc:
        for m in results.values():
            m.fail(str(exc))
        return list(results.values())
    if not (dest / ".git" / "hooks" / "pre-commit").is_file():
        for m in results.values():
            m.fail("pivot hooks install did not install a pre-commit hook")
        return list(results.values())
    labels = list(exes)
    for command in COMMANDS:
        for label in labels:  # warm-up: page cache, bytecode, state.db
            use(dest, exes[label], env)
            run_timed(argv_for(command, exes[label]), cwd=dest, env=env)
        for r in range(repeats):
            for label in (labels if r % 2 == 0 else labels[::-1]):
                m = results[(label, command)]
                if m.status == "ok" and not sample(m, dest, exes[label], env):
                    log(f"  {label} {command}: failed")
        log("  " + "; ".join(f"{label}: {command}: {fmt_measurement(results[(label, command)])}" for label in labels))
    return list(results.values())


def report(results: list[Measurement], sizes: list[int], shapes: list[Shape], labels: list[str]) -> str:
    rows = []
    for shape in shapes:
        for command in COMMANDS:
            for n in sizes:
                found = {label: next((r for r in results if r.tool == label and r.metric == command
                                      and r.config == {"stages": n, "shape": shape}), None) for label in labels}
                row = [shape, str(n), f"`{command}`", *(fmt_measurement(found[label]) for label in labels)]
                if len(labels) == 2:
                    row.append(fmt_ratio(found[labels[0]], found[labels[1]]))
                rows.append(row)
    header = ["shape", "N", "command", *(f"{label} median (min–max)" for label in labels)]
    if len(labels) == 2:
        header.append(f"{labels[0]}/{labels[1]}")
    return markdown_table(header, rows) + failure_notes(results)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pivot", help="pivot executable (default: $PIVOT, else `pivot` on PATH)")
    p.add_argument("--baseline", help="a second pivot executable, measured in pairs with the first (before/after)")
    p.add_argument("--stages", default="100,1000", help="comma-separated pipeline sizes (default 100,1000)")
    p.add_argument("--shapes", default="chain", help="comma-separated subset of chain,fanout (default chain)")
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
    shapes = [cast(Shape, x) for x in SHAPES if x in args.shapes.split(",")]
    exes = {"pivot": pivot}
    if args.baseline:
        exes["baseline"] = args.baseline
    labels = ["baseline", "pivot"] if args.baseline else ["pivot"]
    env = child_env(args.env_as_is)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pivot-bench-verify-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = [m for n in sizes for shape in shapes for m in bench_size(exes, shape, n, args.repeats, workdir, env)]
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report(results, sizes, shapes, labels))
    path = write_results("verify", {
        "machine": machine_info(),
        "load_average": os.getloadavg(),
        "settings": {"repeats": args.repeats, "stages": sizes, "shapes": shapes,
                     "bytecode_cache": "PYTHONDONTWRITEBYTECODE" not in env},
        "executables": {**exes, **{f"{k}_version": tool_version([v, "--version"]) for k, v in exes.items()}},
        "results": [m.to_json() for m in results],
    })
    log(f"raw samples: {path}")
    return 0 if all(m.status == "ok" for m in results) else 1


if __name__ == "__main__":
    sys.exit(main())
