"""A cluster started from configuration (issue #21): `executor: {kind: dask, cluster: {class, options,
scale}}`. Pivot imports the class, checks the options against its constructor before anything
starts, builds it, scales it (adaptively or to a fixed size), runs the stages, and closes it at
the end of the run, also after a failure and on Ctrl-C. Tested with distributed.LocalCluster
through the same path; Slurm's and Kubernetes' classes only have their options checked (no
scheduler is started). Also: what a task carries to a worker holds no credentials.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PIVOT, Project, make_git_repo
from seaweed import DUMMY_CREDENTIALS, S3_BUCKET, SeaweedServer
from test_dask import interrupt_when_started

pytest.importorskip("distributed", reason="the dask tests need distributed (pip install -e '.[test]')")

CHAIN = '''\
import json
import os
import time

from pivot import stage

SIDE = {side!r}


def _where(name):
    """Where the stage ran: the worker process and the scheduler it answers to."""
    from distributed import get_worker

    worker = get_worker()
    os.makedirs(SIDE, exist_ok=True)
    with open(os.path.join(SIDE, name + "." + str(os.getpid()) + ".json"), "w") as f:
        json.dump({{"pid": os.getpid(), "scheduler": worker.scheduler.address}}, f)


@stage(deps=["data/raw.txt"], outs=["a.txt"])
def a():
    _where("a")
    open("a.txt", "w").write(open("data/raw.txt").read().upper())


@stage(deps=["a.txt"], outs=["b.txt"])
def b():
    _where("b")
    open("b.txt", "w").write(open("a.txt").read() + "b")


@stage(deps=["data/raw.txt"], outs=["c.txt"])
def c():
    _where("c")
    if os.path.exists({fail!r}):
        raise RuntimeError("c was told to fail")
    if os.path.exists({hold!r}):
        open({hold!r} + ".started", "w").close()
        time.sleep(60)
    open("c.txt", "w").write("c")
'''


def make_project(tmp_path: Path, seaweed: SeaweedServer) -> tuple[Project, Path]:
    root = tmp_path / "p"
    make_git_repo(root)
    p = Project(root)
    p.pivot("init")
    side = tmp_path / "side"
    p.pipeline(CHAIN.format(side=str(side), fail=str(tmp_path / "fail"), hold=str(tmp_path / "hold")))
    p.write("data/raw.txt", "raw\n")
    p.pivot("remote", "add", "store", f"s3://{S3_BUCKET}/{uuid.uuid4().hex[:10]}", "--default",
            "-o", f"endpoint_url={seaweed.endpoint}")
    return p, side


def configure(project: Project, cluster: dict[str, Any] | None, *, local: bool = False, **more: Any) -> None:
    """Write executor: {kind: dask, cluster: ...} to config.yaml (or config.local.yaml)."""
    import yaml

    path = project.root / ".pivot" / ("config.local.yaml" if local else "config.yaml")
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    data = data or {}
    data["executor"] = {"kind": "dask", **({"cluster": cluster} if cluster is not None else {}), **more}
    path.write_text(yaml.safe_dump(data))


def ran_on(side: Path) -> list[dict[str, Any]]:
    return [json.loads(f.read_text()) for f in sorted(side.glob("*.json"))]


def gone(pids: set[int]) -> bool:
    """No process with these ids is running (a zombie awaiting its reaper counts as gone)."""
    import psutil

    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def refused_port(address: str) -> bool:
    import socket

    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, int(port))) != 0


def assert_closed(side: Path) -> None:
    seen = ran_on(side)
    assert seen, "no stage ran on the cluster"
    pids = {w["pid"] for w in seen}
    deadline = time.monotonic() + 10  # the nannies end their workers as the cluster closes
    while not gone(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone(pids), f"worker processes {pids} outlived the run"
    assert pids.isdisjoint({os.getpid()})
    for address in {w["scheduler"] for w in seen}:
        assert refused_port(address), f"the scheduler at {address} still listens"


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in DUMMY_CREDENTIALS.items():  # the workers Pivot starts inherit them
        monkeypatch.setenv(k, v)


LOCAL = {"class": "distributed.LocalCluster",
         "options": {"n_workers": 2, "threads_per_worker": 1, "processes": True, "dashboard_address": None}}


# -- a cluster from configuration ------------------------------------------------------------------


def test_a_cluster_from_configuration_runs_the_stages_and_is_closed(tmp_path: Path, seaweed: SeaweedServer) -> None:
    project, side = make_project(tmp_path, seaweed)
    configure(project, LOCAL)
    proc = project.pivot("run", "--json")
    done = [json.loads(line) for line in proc.stdout.splitlines() if '"done"' in line]
    assert sorted(e["stage"] for e in done) == ["a", "b", "c"] and all(e["worker"] for e in done)
    assert project.read("b.txt") == "RAW\nb"
    assert len({w["pid"] for w in ran_on(side)}) <= 2
    assert_closed(side)
    project.pivot("verify", "--remote")  # the remote was the shared store


def test_an_adaptive_cluster_scales_up_and_is_closed_after_a_failure(tmp_path: Path,
                                                                      seaweed: SeaweedServer) -> None:
    """No workers at the start: adaptive scaling starts them for the stages waiting; a failing
    stage fails the run (exit 1) and the cluster is closed all the same."""
    project, side = make_project(tmp_path, seaweed)
    configure(project, {**LOCAL, "options": {**LOCAL["options"], "n_workers": 0},
                        "scale": {"minimum": 0, "maximum": 2}})
    (tmp_path / "fail").touch()
    proc = project.pivot("run", "--keep-going", check=False)
    assert proc.returncode == 1, proc
    assert "c was told to fail" in proc.stdout + proc.stderr
    assert project.read("b.txt") == "RAW\nb" and not project.exists("c.txt")
    assert_closed(side)


def test_ctrl_c_closes_the_cluster(tmp_path: Path, seaweed: SeaweedServer) -> None:
    project, side = make_project(tmp_path, seaweed)
    configure(project, {**LOCAL, "scale": {"workers": 1}})
    hold = tmp_path / "hold"
    hold.touch()
    proc = subprocess.Popen([PIVOT, "run", "c"], cwd=project.root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = interrupt_when_started(proc, hold)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err, err
    assert_closed(side)


# -- configuration errors, before anything starts ---------------------------------------------------

BAD = [
    ("config.yaml", "not a mapping", "executor.cluster must be a mapping"),
    ("config.yaml", {"class": "distributed.LocalCluster", "size": 3}, "unknown key 'size'"),
    ("config.local.yaml", {"class": "LocalCluster"}, "class must be a class's dotted path"),
    ("config.yaml", {"class": "distributed.LocalCluster", "options": [1, 2]}, "options must be a mapping"),
    ("config.yaml", {"class": "distributed.LocalCluster", "scale": {"minimum": 5, "maximum": 2}},
     "minimum (5) must not be above maximum (2)"),
    ("config.yaml", {"class": "distributed.LocalCluster", "scale": {"workers": -1}}, "scale.workers must be a whole"),
    ("config.yaml", {"class": "distributed.LocalCluster", "scale": {"workers": 2, "maximum": 3}}, "not both"),
    ("config.yaml", {"class": "distributed.LocalCluster", "scale": {"minimum": 1}}, "needs a maximum"),
    ("config.yaml", {"class": "distributed.LocalCluster", "options": {"n_wrokers": 2}},
     "distributed.LocalCluster has no option 'n_wrokers' (did you mean 'n_workers'?)"),
    ("config.yaml", {"class": "distributed.NoSuchCluster"}, "distributed has no class NoSuchCluster"),
    ("config.yaml", {"class": "dask_kubernetes.operator.KubeCluster"}, "pip install 'pivot[kubernetes]'"),
    ("config.yaml", {"class": "dask_jobqueue.SLURMCluster"}, "pip install 'pivot[slurm]'"),
]


def test_cluster_configuration_errors_are_one_line_naming_the_file(tmp_path: Path, seaweed: SeaweedServer) -> None:
    project, side = make_project(tmp_path, seaweed)
    # Neither deployer is importable here, whatever is installed: their packages are shadowed.
    shim = tmp_path / "shim"
    for name in ("dask_kubernetes", "dask_jobqueue"):
        (shim / name).mkdir(parents=True)
        (shim / name / "__init__.py").write_text(f"raise ModuleNotFoundError('no', name={name!r})\n")
    for where, cluster, message in BAD:
        configure(project, None, local=where != "config.local.yaml")  # no cluster in the other file
        configure(project, cluster, local=where == "config.local.yaml")
        proc = subprocess.run([PIVOT, "run"], cwd=project.root, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(shim)})
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1, (cluster, proc.stderr)
        assert message in lines[0] and f".pivot/{where}" in lines[0], (message, lines[0])
    configure(project, LOCAL, scheduler="tcp://127.0.0.1:1")
    proc = project.pivot("run", check=False)
    assert "has both scheduler and cluster" in proc.stderr, proc.stderr
    assert not project.exists("a.txt") and not ran_on(side)


# -- option validation, without a scheduler ------------------------------------------------------------


STRICT = '''\
STARTED = []


class StrictCluster:
    def __init__(self, cores, memory="1GB", *, queue=None):
        STARTED.append(1)
        raise AssertionError("validation must not build the cluster")


class ForwardingCluster(StrictCluster):
    def __init__(self, name=None, **kwargs):
        super().__init__(**kwargs)
'''


def _check(class_path: str, options: dict[str, Any]) -> str | None:
    from pivot.errors import DaskError
    from pivot.executor.dask_cluster import check_class, parse_cluster

    try:
        check_class(parse_cluster({"class": class_path, "options": options}, ".pivot/config.yaml"))
    except DaskError as exc:
        return str(exc)
    return None


def test_options_are_checked_against_the_constructor_without_building_it(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "strict_clusters.py").write_text(STRICT)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _check("strict_clusters.StrictCluster", {"cores": 2, "queue": "q"}) is None
    assert _check("strict_clusters.ForwardingCluster", {"name": "x", "cores": 2, "memory": "2GB"}) is None
    problem = _check("strict_clusters.ForwardingCluster", {"cores": 2, "partition": "gpu"})
    assert problem is not None and "strict_clusters.ForwardingCluster has no option 'partition'" in problem
    assert sys.modules["strict_clusters"].STARTED == []
    # LocalCluster passes **worker_kwargs to its workers: their options are accepted
    assert _check("distributed.LocalCluster", {"n_workers": 2, "processes": True, "resources": {"GPU": 1},
                                               "memory_limit": "2GB", "nthreads": 1}) is None
    assert "has no option 'workers_count'" in (_check("distributed.LocalCluster", {"workers_count": 2}) or "")


def test_importing_a_deployer_leaves_ctrl_c_to_pivot() -> None:
    """dask_jobqueue sets a SIGINT handler calling sys.exit() when imported: Pivot keeps its own
    (in a fresh interpreter, where nothing has imported dask_jobqueue yet)."""
    if importlib.util.find_spec("dask_jobqueue") is None:  # importorskip would import it here
        pytest.skip("pip install 'pivot[slurm]'")
    script = ("import signal\n"
              "from pivot.executor.dask_cluster import load_class, parse_cluster\n"
              "load_class(parse_cluster({'class': 'dask_jobqueue.SLURMCluster'}, 'config.yaml'))\n"
              "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


def test_slurm_options_are_checked_without_a_scheduler() -> None:
    handler = signal.getsignal(signal.SIGINT)
    try:  # importing dask_jobqueue replaces this process's SIGINT handler (see the test above)
        pytest.importorskip("dask_jobqueue", reason="pip install 'pivot[slurm]'")
    finally:
        signal.signal(signal.SIGINT, handler)
    good = {"queue": "gpu", "account": "proj", "cores": 8, "processes": 1, "memory": "32GB",
            "walltime": "02:00:00", "job_extra_directives": ["--gres=gpu:1"], "local_directory": "$TMPDIR",
            "worker_extra_args": ["--resources", "GPU=1"]}
    assert _check("dask_jobqueue.SLURMCluster", good) is None
    problem = _check("dask_jobqueue.SLURMCluster", {**good, "partition": "gpu"})
    assert problem is not None and "dask_jobqueue.SLURMCluster has no option 'partition'" in problem


def test_kubernetes_options_are_checked_without_a_scheduler() -> None:
    pytest.importorskip("dask_kubernetes.operator", reason="pip install 'pivot[kubernetes]'")
    good = {"name": "pivot", "namespace": "ml", "image": "ghcr.io/me/worker:1", "n_workers": 0,
            "resources": {"requests": {"memory": "2Gi"}}, "env": {"AWS_REGION": "eu-west-1"},
            "worker_command": ["dask", "worker", "--nthreads", "1"]}
    assert _check("dask_kubernetes.operator.KubeCluster", good) is None
    problem = _check("dask_kubernetes.operator.KubeCluster", {**good, "replicas": 3})
    assert problem is not None and "KubeCluster has no option 'replicas'" in problem


# -- credentials stay out of the tasks ----------------------------------------------------------------

CAPTURE = '''\
import os
import pickle

import pivot.executor.dask_worker as dw


def dask_setup(worker):
    """Keep a copy of every task this worker receives, as it arrived (pickled again)."""
    for name in ("run_on_worker", "run_chain"):
        original = getattr(dw, name, None)
        if original is None:
            continue

        def capture(*args, _original=original, _name=name):
            name = _name + "." + str(os.getpid()) + "." + os.urandom(4).hex()
            with open(os.path.join({out!r}, name), "wb") as f:
                pickle.dump(args, f)
            return _original(*args)

        setattr(dw, name, capture)
'''


@pytest.fixture(scope="module")
def capturing_cluster(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedServer) -> Iterator[Any]:
    """One worker whose environment has the S3 credentials, keeping a copy of each task it gets."""
    from distributed import LocalCluster

    home = tmp_path_factory.mktemp("capture")
    (home / "tasks").mkdir()
    preload = home / "capture_preload.py"
    preload.write_text(CAPTURE.format(out=str(home / "tasks")))
    with pytest.MonkeyPatch.context() as env:
        for key, value in DUMMY_CREDENTIALS.items():
            env.setenv(key, value)
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                          preload=[str(preload)]) as lc:
            lc.tasks = home / "tasks"
            yield lc


def test_tasks_carry_no_credentials(tmp_path: Path, seaweed: SeaweedServer, capturing_cluster: Any,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The remote's credentials live in config.local.yaml on this machine (its environment has
    none); the worker has its own. What reaches the worker holds neither the secret nor the key."""
    project, _side = make_project(tmp_path, seaweed)
    secret = DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    key = DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"]
    project.pivot("remote", "add", "store", f"s3://{S3_BUCKET}/{uuid.uuid4().hex[:10]}", "--default", "--force",
                  "-o", f"endpoint_url={seaweed.endpoint}", "-o", f"key={key}", "-o", f"secret={secret}")
    assert secret in project.read(".pivot/config.local.yaml")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    project.pivot("run", "--scheduler", capturing_cluster.scheduler_address)
    assert project.read("b.txt") == "RAW\nb"
    captured = list(capturing_cluster.tasks.iterdir())
    assert captured, "no task reached the worker"
    for path in captured:
        data = path.read_bytes()
        assert secret.encode() not in data, f"{path.name} carries the secret"
        assert b"\x07testing" not in data, f"{path.name} carries the key"  # pickle's short string 'testing'
        for task in _tasks(pickle.loads(data)):
            assert "key" not in task.remote.options and "secret" not in task.remote.options
            assert task.remote.options.get("endpoint_url") == seaweed.endpoint
    project.pivot("verify", "--remote")  # the worker's own credentials put the outputs there


def _tasks(args: Any) -> list[Any]:
    from pivot.executor.dask_worker import WorkerTask

    found = []
    stack = list(args)
    while stack:
        item = stack.pop()
        if isinstance(item, WorkerTask):
            found.append(item)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return found


# -- short chains in one round trip ----------------------------------------------------------------

LINE = '''\
from pivot import stage


@stage(deps=["data/raw.txt"], outs=["a.txt"])
def a():
    open("a.txt", "w").write(open("data/raw.txt").read() + "a")


@stage(deps=["a.txt", "data/raw.txt"], outs=["b.txt"])
def b():
    if open("data/raw.txt").read().startswith("fail"):
        raise ValueError("b refuses " + open("a.txt").read().strip())
    open("b.txt", "w").write(open("a.txt").read() + "b")


@stage(deps=["b.txt", "data/raw.txt"], outs=["c.txt"])
def c():
    open("c.txt", "w").write(open("b.txt").read() + "c")


@stage(deps=["c.txt"], outs=["d.txt"])
def d():
    open("d.txt", "w").write(open("c.txt").read() + "d")


@stage(deps=["data/raw.txt"], outs=["x.txt"])
def x():
    open("x.txt", "w").write("x")
'''


def line_project(root: Path, seaweed: SeaweedServer | None, raw: str) -> Project:
    make_git_repo(root)
    p = Project(root)
    p.pivot("init")
    p.pipeline(LINE)
    p.write("data/raw.txt", raw)
    if seaweed is not None:
        p.pivot("remote", "add", "store", f"s3://{S3_BUCKET}/{uuid.uuid4().hex[:10]}", "--default",
                "-o", f"endpoint_url={seaweed.endpoint}")
    return p


def sent(cluster: Any) -> dict[str, int]:
    """How many calls of each kind the worker got since the last call (run_chain, run_on_worker)."""
    counts: dict[str, int] = {}
    for f in cluster.tasks.iterdir():
        counts[f.name.split(".")[0]] = counts.get(f.name.split(".")[0], 0) + 1
        f.unlink()
    return counts


def test_a_chain_runs_in_one_round_trip_with_a_lock_per_stage(tmp_path: Path, seaweed: SeaweedServer,
                                                              capturing_cluster: Any) -> None:
    """a -> b -> c -> d go to the worker as one task; each stage still gets its own done event
    and its own lock, the same as a local run writes, and the remote holds every output."""
    sent(capturing_cluster)
    project = line_project(tmp_path / "p", seaweed, "raw\n")
    local = line_project(tmp_path / "local", None, "raw\n")
    proc = project.pivot("run", "--json", "--scheduler", capturing_cluster.scheduler_address, "d")
    done = [json.loads(line)["stage"] for line in proc.stdout.splitlines() if '"done"' in line]
    assert done == ["a", "b", "c", "d"]
    assert sent(capturing_cluster) == {"run_chain": 1, "run_on_worker": 4}
    local.pivot("run", "d")
    for name in "abcd":
        assert project.lock(name) == local.lock(name)
        assert project.read(f"{name}.txt") == local.read(f"{name}.txt")
    project.pivot("verify", "--remote", "d")
    project.pivot("run", "--force", "--scheduler", capturing_cluster.scheduler_address, "d")
    assert sent(capturing_cluster) == {"run_chain": 1, "run_on_worker": 4}
    assert all(project.lock(n) == local.lock(n) for n in "abcd")


def test_a_failure_in_a_chain_is_reported_for_its_stage(tmp_path: Path, seaweed: SeaweedServer,
                                                         capturing_cluster: Any) -> None:
    """b raises on the worker: a keeps its lock, b fails with its own traceback, c and d are not
    run (they were never sent ahead of b's failure), x runs with --keep-going."""
    sent(capturing_cluster)
    project = line_project(tmp_path / "p", seaweed, "fail\n")
    project.write("b.txt", "previous")
    proc = project.pivot("run", "--keep-going", "--scheduler", capturing_cluster.scheduler_address, check=False)
    assert proc.returncode == 1
    assert sent(capturing_cluster) == {"run_chain": 1, "run_on_worker": 3}  # a with b, c, d after it; x
    out = proc.stdout + proc.stderr
    assert "ValueError: b refuses fail" in out and 'pipeline.py", line' in out
    assert "upstream stage 'b' failed" in out
    assert project.exists(".pivot/stages/a.lock") and project.exists(".pivot/stages/x.lock")
    assert not any(project.exists(f".pivot/stages/{n}.lock") for n in "bcd")
    assert project.read("b.txt") == "previous" and not project.exists("c.txt")
    # fixed: b, c and d run (a is up to date), again as one chain
    project.write("data/raw.txt", "ok\n")
    project.pivot("run", "--scheduler", capturing_cluster.scheduler_address)
    assert project.read("d.txt") == "ok\nabcd"
    assert sent(capturing_cluster) == {"run_chain": 1, "run_on_worker": 5}  # a (its dep changed) with b, c, d; x
