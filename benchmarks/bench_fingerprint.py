"""How long code fingerprints take when nothing changed (target: under 0.3 s for 1,000 stages
spread over 50 modules).

The generated project (a git repository) has M stage modules of S/M stages each, plus a
shared `common.py`. Every stage reaches realistic code: a class with methods, two helpers
(one calling the other), a module-level constant and dict, and a shared helper and constant
in `common.py`. `pivot run` runs it once, so the state database holds every module's summary
and the lock files exist. Then, R times each:

- **fingerprints, in-process**: in one child Python process (`--python`, default the one
  beside the pivot executable) that has loaded the project (`Repo.load`, as `pivot status`
  does), a fresh `Fingerprinter` on the warm state database fingerprints every stage. This is
  exactly the fingerprint share of `pivot status`; interpreter start-up and imports excluded.
  Reported as wall time and as the process's CPU time (steadier on a busy machine).
- **fingerprints, no state DB**: the same without the state database (every module parsed),
  for reference: what the first status after editing every file would cost.
- **pivot status**: the whole command, process start to exit, nothing changed.

Prints a markdown table of medians (min–max) and writes the raw samples as JSON to
benchmarks/results/.

    python benchmarks/bench_fingerprint.py --pivot .venv/bin/pivot
    python benchmarks/bench_fingerprint.py --stages 1000 --modules 50 -r 7
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
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

COMMON = '''\
"""Shared helpers and constants."""

BASE = 3
BOUNDS = (0, 100)


def clamp(x, lo, hi):
    """Keep x within [lo, hi]."""
    return max(lo, min(hi, x))
'''

MODULE_HEAD = '''\
"""Stages of group {m}."""
from pivot import stage

import common

SCALE = {m}
LIMITS = {{"lo": 0, "hi": 1000}}


def prepare(x):
    return common.clamp(x * SCALE, LIMITS["lo"], LIMITS["hi"])


def finish(x):
    return prepare(x) + common.BASE


class Model:
    """A small model."""

    def __init__(self, k):
        self.k = k

    def run(self, x):
        return finish(x) * self.k
'''

STAGE = '''

@stage()
def s{i:04d}():
    return Model({i}).run(common.BOUNDS[1]) + prepare({i})
'''

# Runs in the child: load the project as `pivot status` does, then time the fingerprints.
CHILD = '''
import json, statistics, sys, time
from pathlib import Path
from pivot.fingerprint import Fingerprinter
from pivot.repo import Repo

root, repeats = Path(sys.argv[1]), int(sys.argv[2])
repo = Repo.load(root)
funcs = [s.func for s in repo.stages]
out = {"stages": len(funcs), "warm": [], "warm_cpu": [], "no_state": [], "entries": 0}
for _ in range(repeats):
    start, cpu = time.perf_counter(), time.process_time()
    fp = Fingerprinter(repo.root, repo.state)
    prints = [fp.fingerprint(f) for f in funcs]
    out["warm"].append(time.perf_counter() - start)
    out["warm_cpu"].append(time.process_time() - cpu)
out["entries"] = sum(len(p.manifest) for p in prints) / len(prints)
for _ in range(repeats):
    start = time.perf_counter()
    fp = Fingerprinter(repo.root, None)
    for f in funcs:
        fp.fingerprint(f)
    out["no_state"].append(time.perf_counter() - start)
repo.close()
print(json.dumps(out))
'''


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def generate(dest: Path, stages: int, modules: int) -> None:
    dest.mkdir(parents=True)
    (dest / "common.py").write_text(COMMON)
    per = -(-stages // modules)  # ceiling: every stage gets a module
    names = []
    for m in range(modules):
        ids = range(m * per, min(stages, (m + 1) * per))
        if not ids:
            break
        name = f"group{m:03d}"
        names.append(name)
        text = MODULE_HEAD.format(m=m + 1) + "".join(STAGE.format(i=i) for i in ids)
        (dest / f"{name}.py").write_text(text)
    (dest / "pipeline.py").write_text(textwrap.dedent("".join(f"import {n}  # noqa: F401\n" for n in names)))


def check(result: object, what: str) -> None:
    if not result.ok:
        raise SystemExit(f"{what} failed: {result.failure()}")  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pivot", help="pivot executable (default: $PIVOT, else pivot on PATH)")
    parser.add_argument("--python", help="Python with pivot installed (default: the one beside --pivot)")
    parser.add_argument("--stages", type=int, default=1000)
    parser.add_argument("--modules", type=int, default=50)
    parser.add_argument("-r", "--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, help="where to generate (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the generated project")
    args = parser.parse_args()

    pivot = resolve_executable(args.pivot, "PIVOT", "pivot")
    if pivot is None:
        raise SystemExit("pivot not found: pass --pivot or set $PIVOT")
    python = args.python or str(Path(pivot).parent / "python")
    env = tool_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as on a typical machine
    work = Path(tempfile.mkdtemp(prefix="bench-fp-", dir=args.workdir))
    root = work / "proj"
    config = {"stages": args.stages, "modules": args.modules, "repeats": args.repeats}
    results: list[Measurement] = []
    try:
        log(f"generating {args.stages} stages in {args.modules} modules under {root}")
        generate(root, args.stages, args.modules)
        for argv in (["git", "init", "-q"], [pivot, "init"], [pivot, "run"]):
            log(" ".join(argv))
            check(run_timed(argv, cwd=root, env=env, timeout=3600), " ".join(argv))

        log("in-process fingerprints")
        child = subprocess.run([python, "-c", CHILD, str(root), str(args.repeats)], cwd=root, env=env,
                               capture_output=True, text=True, timeout=3600)
        if child.returncode != 0:
            raise SystemExit(f"in-process timing failed:\n{child.stderr[-2000:]}")
        data = json.loads(child.stdout.strip().splitlines()[-1])
        results += [
            Measurement("pivot", "fingerprints, warm state DB (in-process, wall)", config, data["warm"]),
            Measurement("pivot", "fingerprints, warm state DB (in-process, CPU)", config, data["warm_cpu"]),
            Measurement("pivot", "fingerprints, no state DB (in-process, wall)", config, data["no_state"]),
        ]

        log("pivot status")
        status = Measurement("pivot", "pivot status (whole command)", config)
        for _ in range(args.repeats):
            res = run_timed([pivot, "status"], cwd=root, env=env)
            if not status.add(res):
                break
            if "up to date" not in res.stdout:
                status.fail(f"pivot status reported stale stages: {res.stdout[-500:]}")
                break
        results.append(status)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    rows = [[m.metric, fmt_measurement(m)] for m in results]
    print(f"{data['stages']} stages in {args.modules} modules, "
          f"{data['entries']:.1f} manifest entries per stage on average\n")
    print(markdown_table(["measurement", "median (min–max)"], rows) + failure_notes(results))
    path = write_results("fingerprint", {
        "machine": machine_info(), "pivot": tool_version([pivot, "--version"]), "config": config,
        "entries_per_stage": data["entries"], "results": [m.to_json() for m in results],
        "cwd": os.getcwd(),
    })
    log(f"raw results: {path}")


if __name__ == "__main__":
    main()
