"""Stages on a Dask cluster (issue #8): `pivot run --executor dask --scheduler ADDRESS`.

One LocalCluster for the module: two worker processes with one thread each, whose working
directory (set by a preload script) and scratch space are outside every project, and the
session's SeaweedFS S3 server (tests/seaweed.py) as the remote they share with the client. The
real `pivot` CLI runs in a subprocess, so the cluster's workers never see the project: stages
reach them by value.

A diamond pipeline runs on the cluster and in the local pool, in two projects with identical
files; outputs, locks and cache objects must match byte for byte. A stage that raises fails as
it does locally; a worker killed mid-stage is replaced and the run completes, recording the
stage once.
"""

from __future__ import annotations

import json
import os
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
from seaweed import DUMMY_CREDENTIALS, S3_BUCKET, SeaweedServer, free_port

pytest.importorskip("distributed", reason="the dask tests need distributed (pip install -e '.[test]')")

BUCKET = S3_BUCKET

DIAMOND = '''\
import json
import os
import sys

from pydantic import BaseModel

from pivot import IncrementalOut, Metric, stage

import helpers

SIDE = {side!r}


def _where(name):
    """Record where the stage ran: its cwd, and whether the project is visible from there."""
    os.makedirs(SIDE, exist_ok=True)
    with open(os.path.join(SIDE, name + ".json"), "w") as f:
        json.dump({{"cwd": os.getcwd(), "pid": os.getpid(), "pipeline_here": os.path.exists("pipeline.py"),
                   "pipeline_module": "pipeline" in sys.modules}}, f)


@stage(deps=["data/raw.txt"], outs=["clean.txt"])
def clean():
    import textops  # a project module imported inside the stage travels whole

    _where("clean")
    print("cleaning", len(open("data/raw.txt").read()), "bytes")
    with open("clean.txt", "w") as f:
        f.write(textops.normalise(open("data/raw.txt").read()))


class StatsParams(BaseModel):
    unit: str = "words"


@stage(deps=["clean.txt"], outs=["features"])
def features():
    _where("features")
    os.makedirs("features/sub", exist_ok=True)
    for i, line in enumerate(open("clean.txt").read().split()):
        with open(f"features/sub/f{{i}}.txt", "w") as f:
            f.write(line * helpers.REPEAT)


@stage(deps=["clean.txt"], outs=["stats.txt", IncrementalOut("history.txt")], params=StatsParams)
def stats(params: StatsParams):
    _where("stats")
    words = open("clean.txt").read().split()
    with open("stats.txt", "w") as f:
        f.write(str(len(words)))
    with open("history.txt", "a") as f:
        f.write(f"{{len(words)}} {{params.unit}}\\n")


@stage(deps=["features", "stats.txt"], outs=["model.bin", Metric("metrics.json")])
def train():
    _where("train")
    names = sorted(os.listdir("features/sub"))
    with open("model.bin", "wb") as f:
        for n in names:
            f.write(open(os.path.join("features/sub", n), "rb").read()[::-1])
    with open("metrics.json", "w") as f:
        json.dump({{"files": len(names), "words": int(open("stats.txt").read())}}, f)
'''

HELPERS = '''\
REPEAT = 3
'''

TEXTOPS = '''\
def normalise(text):
    return " ".join(w.lower() for w in text.split())
'''


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedServer) -> Iterator[Any]:
    """Two worker processes, one thread each; cwd and scratch space outside any project."""
    from distributed import Client, LocalCluster

    home = tmp_path_factory.mktemp("worker-home")
    preload = home / "chdir_preload.py"
    preload.write_text(f"import os\n\ndef dask_setup(worker):\n    os.chdir({str(home)!r})\n")
    with pytest.MonkeyPatch.context() as env:
        for key, value in DUMMY_CREDENTIALS.items():  # workers find S3 credentials in their environment
            env.setenv(key, value)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                          local_directory=str(home / "scratch"), preload=[str(preload)]) as lc, \
                Client(lc) as client:
            client.wait_for_workers(2, timeout=60)
            lc.home = home
            lc.client = client
            yield lc


@pytest.fixture
def side(tmp_path: Path) -> Path:
    return tmp_path / "side"


def make_project(root: Path, pipeline: str, s3: SeaweedServer | None,
                 raw: str = "The quick brown Fox\njumps\n") -> Project:
    make_git_repo(root)
    p = Project(root)
    p.pivot("init")
    p.pipeline(pipeline)
    p.write("helpers.py", HELPERS)
    p.write("textops.py", TEXTOPS)
    p.write("data/raw.txt", raw)
    if s3 is not None:
        p.pivot("remote", "add", "store", f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}", "--default",
                "-o", f"endpoint_url={s3.endpoint}")
    return p


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(k, v)


def on_cluster(project: Project, cluster: Any, *args: str,
               check: bool | None = True) -> subprocess.CompletedProcess[str]:
    return project.pivot("run", "--executor", "dask", "--scheduler", cluster.scheduler_address, *args, check=check)


def tree(project: Project, *paths: str) -> dict[str, bytes]:
    """Every file under `paths` (relative to the root), with its bytes."""
    out: dict[str, bytes] = {}
    for rel in paths:
        full = project.root / rel
        files = [full] if full.is_file() else sorted(p for p in full.rglob("*") if p.is_file())
        for f in files:
            out[f.relative_to(project.root).as_posix()] = f.read_bytes()
    return out


def cache_tree(project: Project) -> dict[str, bytes]:
    return {p.relative_to(project.root).as_posix(): p.read_bytes() for p in project.cache_objects()}


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


OUTPUTS = ("clean.txt", "features", "stats.txt", "history.txt", "model.bin", "metrics.json", ".pivot/stages")


# -- the tests ----------------------------------------------------------------------------------------


def test_diamond_on_the_cluster_matches_a_local_run(tmp_path: Path, cluster: Any, seaweed: SeaweedServer,
                                                    side: Path) -> None:
    pipeline = DIAMOND.format(side=str(side))
    local = make_project(tmp_path / "local", pipeline, None)
    remote = make_project(tmp_path / "remote", pipeline, seaweed)

    local.pivot("run", "-j", "2")
    proc = on_cluster(remote, cluster, "--json")
    evts = events(proc.stdout)
    assert sorted(e["stage"] for e in evts if e["event"] == "done") == ["clean", "features", "stats", "train"]
    for e in evts:
        if e["event"] == "done":  # which worker ran it, and where its time went there
            assert e["worker"].startswith("tcp://127.0.0.1:"), e
            assert set(e["timings"]) == {"fetch", "run", "upload"}, e
            assert all(t >= 0 for t in e["timings"].values()) and e["timings"]["run"] <= e["seconds"] + 1, e

    # Stages ran in the workers' scratch space, with no project in sight.
    for name in ("clean", "features", "stats", "train"):
        seen = json.loads((side / f"{name}.json").read_text())
        assert not seen["cwd"].startswith(str(remote.root)), seen
        assert seen["cwd"].startswith(str(cluster.home)), seen
        assert not seen["pipeline_here"] and not seen["pipeline_module"], seen
        assert seen["pid"] in _worker_pids(cluster)

    assert tree(remote, *OUTPUTS) == tree(local, *OUTPUTS)
    assert cache_tree(remote) == cache_tree(local)
    assert "cleaning 26 bytes" in remote.pivot("logs", "clean").stdout
    assert "nothing to run" in on_cluster(remote, cluster).stdout
    remote.pivot("verify", "--remote")  # the remote, the shared cache, holds every output too

    # A change flows through both again; the IncrementalOut starts from its previous version.
    for p in (local, remote):
        p.write("data/raw.txt", "The quick brown Fox\njumps over\n")
        p.write("params.yaml", "stats:\n  unit: tokens\n")
    local.pivot("run", "-j", "2")
    on_cluster(remote, cluster)
    assert remote.read("history.txt") == "5 words\n6 tokens\n"
    assert tree(remote, *OUTPUTS) == tree(local, *OUTPUTS)
    assert cache_tree(remote) == cache_tree(local)
    assert "all 4 stage(s) up to date" in remote.pivot("status").stdout


def test_no_download_leaves_outputs_on_the_remote(tmp_path: Path, cluster: Any, seaweed: SeaweedServer,
                                                  side: Path) -> None:
    project = make_project(tmp_path / "p", DIAMOND.format(side=str(side)), seaweed)
    # The executor from the configuration, this time (config.local.yaml: this machine only).
    project.write(".pivot/config.local.yaml", f"executor:\n  kind: dask\n  scheduler: {cluster.scheduler_address}\n")
    project.pivot("run", "--no-download")
    # Locks are written, metrics (which belong in git) are in the workspace; the rest stays remote.
    assert {p.name for p in (project.root / ".pivot" / "stages").glob("*.lock")} == \
        {"clean.lock", "features.lock", "stats.lock", "train.lock"}
    assert json.loads(project.read("metrics.json")) == {"files": 5, "words": 5}
    assert not project.exists("model.bin") and not project.exists("features")
    assert project.cache_objects() == []
    project.pivot("pull")
    assert "all 4 stage(s) up to date" in project.pivot("status").stdout
    assert project.read("stats.txt") == "5"


BIG = '''\
import hashlib
import os

from pivot import stage


def _bytes(seed, n):
    out, block = bytearray(), seed.encode()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


@stage(deps=["data/raw.txt"], outs=["big.bin", "bigdir"])
def make():
    seed = open("data/raw.txt").read()
    with open("big.bin", "wb") as f:
        f.write(_bytes(seed, 600_000))
    os.makedirs("bigdir", exist_ok=True)
    for i in range(3):
        with open(f"bigdir/part{i}.bin", "wb") as f:
            f.write(_bytes(seed + str(i), 300_000))


@stage(deps=["big.bin", "bigdir"], outs=["digest.txt"])
def digest():
    h = hashlib.sha256(open("big.bin", "rb").read())
    for name in sorted(os.listdir("bigdir")):
        h.update(open(os.path.join("bigdir", name), "rb").read())
    with open("digest.txt", "w") as f:
        f.write(h.hexdigest())
'''


def test_large_objects_go_through_a_folder_remote(tmp_path: Path, cluster: Any) -> None:
    """Deps and outputs too big to travel inside tasks and replies go through the remote (a folder
    here, as a shared file system would be); the result matches a local run, with or without
    --no-download (then after `pivot pull`)."""
    local = make_project(tmp_path / "local", BIG, None)
    local.pivot("run")
    for download in (True, False):
        remote = make_project(tmp_path / f"remote-{download}", BIG, None)
        remote.pivot("remote", "add", "shared", str(tmp_path / f"shared-{download}"), "--default")
        on_cluster(remote, cluster, *(() if download else ("--no-download",)))
        remote.pivot("verify", "--remote")
        if not download:
            assert not remote.exists("big.bin") and remote.cache_objects() == []
            remote.pivot("pull")
        assert tree(remote, "big.bin", "bigdir", "digest.txt", ".pivot/stages") == \
            tree(local, "big.bin", "bigdir", "digest.txt", ".pivot/stages")
        assert cache_tree(remote) == cache_tree(local)
        assert "all 2 stage(s) up to date" in remote.pivot("status").stdout


FAILING = '''\
import os

from pivot import stage

import helpers


@stage(deps=["data/raw.txt"], outs=["a.txt"])
def ok():
    with open("a.txt", "w") as f:
        f.write("fine")


@stage(deps=["data/raw.txt"], outs=["b.txt"])
def bad():
    print("about to fail")
    with open("b.txt", "w") as f:
        f.write("partial")
    helpers_fail(helpers.REPEAT)


def helpers_fail(n):
    raise ValueError(f"boom {n}")


@stage(deps=["b.txt"], outs=["c.txt"])
def after_bad():
    open("c.txt", "w").write("never")
'''


def test_a_stage_that_raises_on_the_cluster_fails_as_it_does_locally(tmp_path: Path, cluster: Any,
                                                                     seaweed: SeaweedServer) -> None:
    local = make_project(tmp_path / "local", FAILING, None)
    remote = make_project(tmp_path / "remote", FAILING, seaweed)
    remote.write("b.txt", "previous")

    lp = local.pivot("run", "-j", "2", "--keep-going", check=False)
    rp = on_cluster(remote, cluster, "--keep-going", check=False)
    assert lp.returncode == rp.returncode == 1

    def failure(proc: subprocess.CompletedProcess[str], root: Path) -> str:
        return proc.stderr.replace(str(root), "<root>")

    assert failure(rp, remote.root) == failure(lp, local.root)
    assert 'File "<root>/pipeline.py", line 23, in helpers_fail' in failure(rp, remote.root)
    assert 'raise ValueError(f"boom {n}")' in rp.stderr
    assert "[bad] about to fail" in rp.stdout
    assert "after_bad: not run (upstream stage 'bad' failed)" in rp.stdout
    assert "about to fail" in remote.pivot("logs", "bad").stdout
    assert remote.read("b.txt") == "previous"  # the previous output is untouched
    assert not (remote.root / ".pivot/stages/bad.lock").exists()
    assert remote.read("a.txt") == "fine"  # --keep-going: the independent stage ran


def test_errors_are_one_line(tmp_path: Path, cluster: Any, seaweed: SeaweedServer) -> None:
    project = make_project(tmp_path / "p", FAILING.replace("helpers_fail(helpers.REPEAT)", "pass"), None)

    def error(*args: str, env: dict[str, str] | None = None) -> str:
        proc = subprocess.run([PIVOT, "run", *args], cwd=project.root, capture_output=True, text=True,
                              timeout=60, env={**os.environ, **(env or {})})
        assert proc.returncode == 1, proc
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        return lines[0]

    assert "pivot remote add" in error("--executor", "dask", "--scheduler", cluster.scheduler_address)
    assert "--scheduler tcp://HOST:8786" in error("--executor", "dask")

    project.pivot("remote", "add", "store", f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}", "--default",
                  "-o", f"endpoint_url={seaweed.endpoint}")
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "distributed.py").write_text("raise ImportError(\"No module named 'distributed'\")\n")
    assert "pip install 'pivot[dask]'" in error("--scheduler", cluster.scheduler_address,
                                                env={"PYTHONPATH": str(shim)})

    nobody = f"tcp://127.0.0.1:{free_port()}"
    project.write(".pivot/config.yaml", project.read(".pivot/config.yaml") + "executor:\n  connect_timeout: 1\n")
    started = time.monotonic()
    line = error("--executor", "dask", "--scheduler", nobody)
    assert nobody in line and "cannot reach the Dask scheduler" in line
    assert time.monotonic() - started < 15
    assert not (project.root / ".pivot/stages/ok.lock").exists()

    # A worker whose package differs for a package the stage uses is refused.
    project.pipeline("import yaml\n\nfrom pivot import stage\n\n\n@stage(outs=['y.txt'])\n"
                     "def dump():\n    open('y.txt', 'w').write(yaml.safe_dump({'a': 1}))\n")
    from importlib import metadata

    mine = metadata.version("PyYAML")
    cluster.client.run(_fake_version, "PyYAML", "0.0.1")
    try:
        line = error("--scheduler", cluster.scheduler_address)
    finally:
        cluster.client.run(_fake_version, "PyYAML", None)
    assert "package PyYAML" in line and mine in line and "0.0.1" in line, line
    assert not project.exists("y.txt") and not (project.root / ".pivot/stages/dump.lock").exists()
    on_cluster(project, cluster)  # the same workers with matching versions run it
    assert project.read("y.txt") == "a: 1\n"


def test_a_client_that_cannot_upload_says_so_after_writing_the_locks(tmp_path: Path, cluster: Any,
                                                                     seaweed: SeaweedServer) -> None:
    """Small outputs come back in the reply and this machine uploads them; here it has no
    credentials (the workers do): the run reports it once, and `pivot push` finishes the job."""
    project = make_project(tmp_path / "p", FAILING.replace("helpers_fail(helpers.REPEAT)", "pass"), seaweed)
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    # (--no-run-cache: a run-record lookup on the remote would warn about the same credentials first)
    proc = subprocess.run([PIVOT, "run", "--no-run-cache", "--scheduler", cluster.scheduler_address],
                          cwd=project.root, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1, proc
    assert "3 ran" in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pivot push" in lines[0] and "credentials" in lines[0].lower(), proc.stderr
    assert project.read("a.txt") == "fine" and (project.root / ".pivot/stages/ok.lock").exists()
    project.pivot("push")
    project.pivot("verify", "--remote")


HELD = '''\
import os
import time

from pivot import stage

RELEASE = {release!r}


@stage(deps=["data/raw.txt"], outs=["held.txt"])
def held():
    with open("held.txt", "w") as f:
        f.write("partial")
    open(RELEASE + ".started", "w").close()
    deadline = time.time() + 30
    while not os.path.exists(RELEASE) and time.time() < deadline:
        time.sleep(0.05)
    with open("held.txt", "a") as f:
        f.write(" and done")
'''


def test_ctrl_c_cancels_the_cluster_stages_and_keeps_nothing(tmp_path: Path, cluster: Any,
                                                              seaweed: SeaweedServer) -> None:
    release = tmp_path / "release"
    project = make_project(tmp_path / "p", HELD.format(release=str(release)), seaweed)
    project.write("held.txt", "previous")
    proc = subprocess.Popen([PIVOT, "run", "--scheduler", cluster.scheduler_address], cwd=project.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = interrupt_when_started(proc, release)
    finally:
        release.touch()  # lets the cancelled call on the worker return, freeing the worker
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in err and "Traceback" not in err
    assert project.read("held.txt") == "previous"
    assert not (project.root / ".pivot/stages/held.lock").exists()
    on_cluster(project, cluster)
    assert project.read("held.txt") == "partial and done"


def test_local_pool_and_help_do_not_import_dask(project: Project) -> None:
    project.pipeline("from pivot import stage\n\n@stage(outs=['x.txt'])\ndef x():\n    open('x.txt', 'w').write('x')\n")
    code = ("import sys\nfrom pivot.cli.main import main\nfor args in (['--help'], ['run']):\n"
            "    try:\n        main(args)\n    except SystemExit as e:\n        assert e.code == 0, e.code\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


SLOW = '''\
import os
import time

from pivot import stage

PIDS = {pids!r}


@stage(deps=["data/raw.txt"], outs=["slow.txt"])
def slow():
    os.makedirs(PIDS, exist_ok=True)
    first = not os.listdir(PIDS)
    open(os.path.join(PIDS, str(os.getpid())), "w").close()
    if first:
        time.sleep(60)  # the test kills this worker meanwhile
    with open("slow.txt", "w") as f:
        f.write("slow done")


@stage(deps=["data/raw.txt"], outs=["quick.txt"])
def quick():
    with open("quick.txt", "w") as f:
        f.write("quick")
'''


def test_a_worker_killed_mid_stage_is_replaced_and_the_stage_recorded_once(tmp_path: Path, cluster: Any,
                                                                           seaweed: SeaweedServer) -> None:
    pids = tmp_path / "pids"
    project = make_project(tmp_path / "p", SLOW.format(pids=str(pids)), seaweed)
    proc = subprocess.Popen([PIVOT, "run", "--json", "--scheduler", cluster.scheduler_address],
                            cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (pids.exists() and os.listdir(pids)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the slow stage never started"
            time.sleep(0.05)
        victim = int(os.listdir(pids)[0])
        assert victim in _worker_pids(cluster)
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    evts = events(out)
    assert [e["stage"] for e in evts if e["event"] == "done"].count("slow") == 1
    assert [e["stage"] for e in evts if e["event"] == "running"].count("slow") == 1
    assert len(os.listdir(pids)) == 2  # tried twice, in two different worker processes
    assert project.read("slow.txt") == "slow done"
    assert "slow.txt" in project.lock("slow")
    assert "nothing to run" in on_cluster(project, cluster).stdout


# -- helpers run on the workers ----------------------------------------------------------------------


def _fake_version(dist: str, version: str | None) -> None:
    from pivot.executor import dask_worker as dask_executor

    if version is None:
        dask_executor._VERSIONS.pop(dist, None)
    else:
        dask_executor._VERSIONS[dist] = version


def _worker_pids(cluster: Any) -> set[int]:
    return set(cluster.client.run(os.getpid).values())


def interrupt_when_started(proc: subprocess.Popen[str], marker: Path) -> tuple[str, str]:
    """Ctrl-C to `proc` once its stage has written `marker`.started; its stdout and stderr."""
    deadline = time.monotonic() + 60
    while not Path(str(marker) + ".started").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the stage never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return out, err
