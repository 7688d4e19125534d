"""Per-stage resources, timeouts and retries (issue #21): `@stage(resources=..., timeout=...,
retries=...)`, in the local pool and on a Dask cluster whose workers offer resources.

Stages write when they started and ended, and what they saw (CUDA_VISIBLE_DEVICES, the worker's
resources), to a side folder outside the project; the tests compare the intervals. Each check
has a control that would fail the same assertion if resources were ignored (two 1-CPU stages do
overlap; GPU stages spread over both workers unless resources keep them on the GPU one)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PIVOT, Project, make_git_repo
from test_errors import refused

RECORD = '''\
import json
import os
import time

from pivot import stage

SIDE = {side!r}


def record(name, seconds):
    start = time.time()
    time.sleep(seconds)
    seen = {{"start": start, "end": time.time(), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}}
    try:
        from distributed import get_worker

        seen["worker"] = get_worker().state.total_resources
    except (ImportError, ValueError):
        pass
    os.makedirs(SIDE, exist_ok=True)
    with open(os.path.join(SIDE, name + ".json"), "w") as f:
        json.dump(seen, f)
    with open(name + ".txt", "w") as f:
        f.write(name)
'''


def timed(name: str, seconds: float, **options: Any) -> str:
    opts = "".join(f", {k}={v!r}" for k, v in options.items())
    return f'\n\n@stage(outs=["{name}.txt"]{opts})\ndef {name}():\n    record("{name}", {seconds})\n'


def seen(side: Path, name: str) -> dict[str, Any]:
    return dict(json.loads((side / f"{name}.json").read_text()))


def overlap(side: Path, a: str, b: str) -> bool:
    x, y = seen(side, a), seen(side, b)
    return bool(x["start"] < y["end"] and y["start"] < x["end"])


def on_cpus(project: Project, cpus: set[int], *args: str, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """`pivot ARGS` with this process's CPU affinity set to `cpus`: the local budget."""
    proc = subprocess.run([PIVOT, *args], cwd=project.root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    assert (proc.returncode == 0) == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def two_cpus() -> set[int]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs 2 CPUs")
    return set(cpus[:2])


# -- the local pool ------------------------------------------------------------------------------------


def test_cpus_limit_how_many_stages_run_side_by_side(project: Project, tmp_path: Path) -> None:
    side = tmp_path / "side"
    project.pipeline(RECORD.format(side=str(side)) + timed("big1", 0.4, resources={"cpus": 2})
                     + timed("big2", 0.4, resources={"cpus": 2}) + timed("small1", 0.4)
                     + timed("small2", 0.4, resources={"cpus": 1}))
    on_cpus(project, two_cpus(), "run", "-j", "4")
    assert not overlap(side, "big1", "big2")  # 2 + 2 CPUs > a budget of 2
    for big in ("big1", "big2"):
        assert not overlap(side, big, "small1") and not overlap(side, big, "small2")
    assert overlap(side, "small1", "small2")  # the control: 1 + 1 fits, and they do run side by side

    # Resources are not part of the fingerprint: they change where a stage runs, not its result.
    project.pipeline(project.read("pipeline.py").replace('{"cpus": 2}', '{"cpus": 1, "memory": "1MB"}'))
    assert "nothing to run" in on_cpus(project, two_cpus(), "run").stdout


def test_a_j_above_the_cpu_count_still_runs_that_many_stages_that_declare_no_cpus(
        project: Project, tmp_path: Path) -> None:
    """Stages that declare no `cpus` share the budget out by -j: three at once on 2 CPUs with -j 3,
    as before resources existed (a default of 1 CPU each would run two, then one)."""
    side = tmp_path / "side"
    project.pipeline(RECORD.format(side=str(side)) + "".join(timed(f"io{i}", 1.0) for i in range(3)))
    on_cpus(project, two_cpus(), "run", "-j", "3")
    assert overlap(side, "io0", "io1") and overlap(side, "io1", "io2") and overlap(side, "io0", "io2")


def test_gpus_are_given_out_one_stage_per_device(project: Project, tmp_path: Path) -> None:
    side = tmp_path / "side"
    project.pipeline(RECORD.format(side=str(side)) + "".join(timed(f"g{i}", 1.5, resources={"gpus": 1})
                                                             for i in range(3)))
    on_cpus(project, two_cpus(), "run", "-j", "4", env={"CUDA_VISIBLE_DEVICES": "0,1"})
    names = ("g0", "g1", "g2")
    assert all(seen(side, n)["cuda"] in ("0", "1") for n in names)
    for a in names:
        for b in names:  # two stages at a time, never on the same device
            if a < b and overlap(side, a, b):
                assert seen(side, a)["cuda"] != seen(side, b)["cuda"]
    assert any(overlap(side, a, b) for a in names for b in names if a < b)  # two devices: side by side
    assert not (overlap(side, "g0", "g1") and overlap(side, "g1", "g2") and overlap(side, "g0", "g2"))


def test_a_stage_that_cannot_run_here_is_refused_before_anything_runs(project: Project, tmp_path: Path) -> None:
    side = tmp_path / "side"
    project.pipeline(RECORD.format(side=str(side)) + timed("first", 0) + timed("train", 0, resources={"gpus": 2}))
    env = {"CUDA_VISIBLE_DEVICES": ""}
    proc = on_cpus(project, two_cpus(), "run", env=env, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: stage 'train' needs 2 GPU(s) and this machine has none (CUDA_VISIBLE_DEVICES, else nvidia-smi -L); "
        "run it where there are GPUs (--executor dask) or lower its resources"]
    assert not side.exists() and not project.exists(".pivot/stages/first.lock")

    # Once it ran where there is a GPU, a machine without one does not need to run it.
    on_cpus(project, two_cpus(), "run", env={"CUDA_VISIBLE_DEVICES": "3, 5"})
    assert seen(side, "train")["cuda"] == "3,5"
    assert "nothing to run" in on_cpus(project, two_cpus(), "run", env=env).stdout

    project.pipeline(RECORD.format(side=str(side)) + timed("huge", 0, resources={"memory": "1000TB"}))
    line = refused(project, "run", names=("huge",))
    assert "needs 1,000,000,000,000,000 bytes of memory and this machine has" in line


BAD = [
    ('resources={"cpu": 2}', "unknown resource 'cpu'; use cpus, memory or gpus"),
    ('resources={"cpus": -1}', "resources cpus=-1; give a positive number of CPUs"),
    ('resources={"memory": "lots"}', "resources memory='lots'; give bytes (an int) or a size with a unit"),
    ('resources={"gpus": 0.5}', "resources gpus=0.5; give a whole number of GPUs"),
    ('timeout="soon"', "timeout='soon'; give seconds (a number) or a duration such as '30s'"),
    ("retries=-1", "retries=-1; give a whole number of extra attempts, 0 or more"),
]


def test_bad_resources_timeouts_and_retries_are_refused_with_the_stage_named(project: Project) -> None:
    for options, expected in BAD:
        project.pipeline(f'from pivot import stage\n\n\n@stage(outs=["x.txt"], {options})\ndef shaky():\n'
                         '    open("x.txt", "w").write("x")\n')
        line = refused(project, "run", names=("shaky",))
        assert line.startswith("error: stage 'shaky' (pipeline.py:4): ") and expected in line, line


def test_durations_and_sizes_in_every_unit(project: Project) -> None:
    from pivot.limits import parse_duration, parse_size

    assert [parse_duration(v) for v in ("30s", "5m", "2h", "1h30m", "1.5s", 7)] == [30, 300, 7200, 5400, 1.5, 7]
    assert [parse_size(v) for v in ("512MB", "32GB", "2GiB", "1 kib", 64)] == [512e6, 32e9, 2 * 2**30, 1024, 64]
    for bad in ("soon", "", "0s", "-5m", "h", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


TIMEOUTS = RECORD + '''

@stage(outs=["slow.txt"], timeout="1s")
def slow():
    with open("slow.txt", "w") as f:
        f.write("half")
    time.sleep(60)


@stage(outs=["flaky.txt"], retries=2)
def flaky():
    marker = os.path.join(SIDE, "flaky.tried")
    if not os.path.exists(marker):
        os.makedirs(SIDE, exist_ok=True)
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    with open("flaky.txt", "w") as f:
        f.write("second")


@stage(outs=["hopeless.txt"], retries=1)
def hopeless():
    raise RuntimeError("never works")
'''


def test_a_stage_over_its_timeout_is_killed_and_a_failed_one_retried(project: Project, tmp_path: Path) -> None:
    side = tmp_path / "side"
    project.pipeline(TIMEOUTS.format(side=str(side)) + timed("beside", 2.5))
    started = time.monotonic()
    proc = project.pivot("run", "-j", "3", "-k", check=False)
    assert time.monotonic() - started < 30
    assert "slow: FAILED" in proc.stderr + proc.stdout
    assert "stage 'slow' timed out after 1s" in proc.stderr + proc.stdout
    # Nothing half-written is kept: no output, no lock; the stage beside it was not disturbed.
    assert not project.exists("slow.txt") and not project.exists(".pivot/stages/slow.lock")
    assert project.read("beside.txt") == "beside"
    assert project.read("flaky.txt") == "second" and project.exists(".pivot/stages/flaky.lock")
    assert "flaky: attempt 1 of 3 failed (RuntimeError: first attempt fails); trying again" in proc.stdout
    assert "hopeless: attempt 1 of 2 failed (RuntimeError: never works); trying again" in proc.stdout
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith("2 ran, 0 up to date, 2 failed (failed: "), summary
    assert "slow (timed out)" in summary and "hopeless" in summary, summary
    assert summary.split("; ")[1:] in (["attempts: flaky took 2, hopeless took 2"],
                                       ["attempts: hopeless took 2, flaky took 2"]), summary
    assert not list((project.root / ".pivot" / "cache").glob("tmp/*"))


# -- on a Dask cluster ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Two worker processes (one thread each, with nannies): one offers CPU=2, the other CPU=2 and GPU=1."""
    pytest.importorskip("distributed", reason="the dask tests need distributed (pip install -e '.[test]')")
    from distributed import Client, Nanny, Scheduler, SpecCluster

    home = tmp_path_factory.mktemp("workers")

    def worker(resources: dict[str, float]) -> dict[str, Any]:
        return {"cls": Nanny, "options": {"nthreads": 1, "resources": resources, "local_directory": str(home)}}

    spec = {"plain": worker({"CPU": 2}), "gpu": worker({"CPU": 2, "GPU": 1, "MEMORY": 2e9})}
    with SpecCluster(workers=spec, scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}}) as sc, \
            Client(sc) as client:
        client.wait_for_workers(2, timeout=60)
        sc.client = client
        yield sc


def cluster_project(root: Path, pipeline: str) -> Project:
    make_git_repo(root)
    p = Project(root)
    p.pivot("init")
    p.pipeline(pipeline)
    p.pivot("remote", "add", "store", str(root.parent / f"{root.name}-remote"), "--default")
    return p


def on_cluster(project: Project, cluster: Any, *args: str,
               check: bool | None = True) -> subprocess.CompletedProcess[str]:
    proc = project.pivot("run", "--scheduler", cluster.scheduler_address, *args, check=check)
    cluster.client.wait_for_workers(2, timeout=60)  # a worker restarted by a test is back for the next
    return proc


def test_on_the_cluster_resources_pick_the_workers_and_timeouts_and_retries_hold(tmp_path: Path,
                                                                                  gpu_cluster: Any) -> None:
    side = tmp_path / "side"
    gpu = "".join(timed(f"g{i}", 0.3, resources={"gpus": 1, "memory": "1GB"}) for i in range(3))
    project = cluster_project(tmp_path / "p", TIMEOUTS.format(side=str(side)) + gpu + timed("any", 0.3))
    started = time.monotonic()
    proc = on_cluster(project, gpu_cluster, "-k", "--json", check=False)
    assert time.monotonic() - started < 40
    for name in ("g0", "g1", "g2"):  # three at once on two workers: without resources, some land on "plain"
        assert seen(side, name)["worker"] == {"CPU": 2, "GPU": 1, "MEMORY": 2e9}
    assert seen(side, "any")["worker"]["CPU"] == 2
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(summary["ran"]) == ["any", "flaky", "g0", "g1", "g2"], summary
    assert sorted(summary["failed"]) == ["hopeless", "slow"], summary
    assert summary["timed_out"] == ["slow"] and summary["attempts"] == {"flaky": 2, "hopeless": 2}, summary
    assert project.read("flaky.txt") == "second" and not project.exists("slow.txt")
    assert not project.exists(".pivot/stages/slow.lock")

    # Two GPUs: no worker has them; said before anything runs, not after a hang.
    project.pipeline(project.read("pipeline.py") + timed("big", 0, resources={"gpus": 2}))
    proc = on_cluster(project, gpu_cluster, check=False)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == (
        "error: stage 'big' needs GPU=2 of a worker and no worker of the cluster offers that (workers offer: CPU=2; "
        'CPU=2,GPU=1,MEMORY=2000000000); start workers with dask worker --resources "GPU=2" (docs/dask.md)')
    assert "running" not in proc.stdout and not project.exists(".pivot/stages/big.lock")
    assert not project.exists(".pivot/stages/slow.lock")  # stale, but not run: nothing runs


LOST = RECORD + '''

@stage(outs=["long.txt"], resources={{"cpus": 2}})
def long():
    pids = os.path.join(SIDE, "pids")
    os.makedirs(pids, exist_ok=True)
    first = not os.listdir(pids)
    open(os.path.join(pids, str(os.getpid())), "w").close()
    if first:
        time.sleep(60)  # the test kills this worker meanwhile
    with open("long.txt", "w") as f:
        f.write("long done")
'''


def test_a_worker_lost_mid_stage_and_the_stage_rescheduled(tmp_path: Path, gpu_cluster: Any) -> None:
    side = tmp_path / "side"
    project = cluster_project(tmp_path / "p", LOST.format(side=str(side)))
    proc = subprocess.Popen([PIVOT, "run", "--scheduler", gpu_cluster.scheduler_address], cwd=project.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (side / "pids").exists() or not os.listdir(side / "pids"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the stage never started"
            time.sleep(0.05)
        os.kill(int(os.listdir(side / "pids")[0]), signal.SIGKILL)  # preempted
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    gpu_cluster.client.wait_for_workers(2, timeout=60)
    assert proc.returncode == 0, err
    assert len(os.listdir(side / "pids")) == 2 and project.read("long.txt") == "long done"
    assert "long: rescheduled after a worker was lost" in out
    assert out.strip().splitlines()[-1] == "1 ran, 0 up to date, 0 failed; rescheduled after a worker was lost: long"
