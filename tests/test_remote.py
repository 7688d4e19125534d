"""Remotes: one contract suite run against a local folder and against S3 (SeaweedFS's server over
HTTP, tests/seaweed.py), plus S3 failures (no credentials, no endpoint), the number of requests an
operation makes, gc, verify --remote and the pre-push hook."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import Project
from seaweed import DUMMY_CREDENTIALS, S3_BUCKET, CountingProxy, SeaweedServer, free_port

BUCKET = S3_BUCKET

PIPELINE = """\
import os
from pivot import stage

@stage(deps=["data/raw.txt"], outs=["model.bin", "features"])
def build():
    raw = open("data/raw.txt").read()
    open("model.bin", "w").write(raw * 3)
    os.makedirs("features/sub", exist_ok=True)
    for i in range(5):
        open(f"features/sub/f{i}.txt", "w").write(f"{raw}{i}\\n")
"""
OBJECTS = 7  # model.bin, the features manifest, its 5 files


@dataclass
class Remote:
    kind: str
    url: str
    options: list[str] = field(default_factory=list)
    folder: Path | None = None
    server: SeaweedServer | None = None

    def _key(self, digest: str) -> str:
        return f"{self.url.split('/', 3)[3]}/files/{digest[:2]}/{digest[2:]}"

    def objects(self) -> set[str]:
        if self.folder is not None:
            base = self.folder / "files"
            return {p.parent.name + p.name for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")} \
                if base.exists() else set()
        assert self.server is not None
        prefix = self.url.split("/", 3)[3] + "/files/"
        pages = self.server.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return {"".join(o["Key"].rsplit("/", 2)[1:]) for page in pages for o in page.get("Contents", [])}

    def write(self, digest: str, data: bytes) -> None:
        if self.folder is not None:
            path = self.folder / "files" / digest[:2] / digest[2:]
            path.chmod(0o644)
            path.write_bytes(data)
        else:
            assert self.server is not None
            self.server.client().put_object(Bucket=BUCKET, Key=self._key(digest), Body=data)

    def clear_marker(self) -> None:
        """Remove the generation token, as emptying the whole bucket or folder would."""
        if self.folder is not None:
            (self.folder / "pivot-generation").unlink(missing_ok=True)
        else:
            assert self.server is not None
            self.server.client().delete_object(Bucket=BUCKET, Key=f"{self.url.split('/', 3)[3]}/pivot-generation")

    def delete(self, digest: str) -> None:
        if self.folder is not None:
            (self.folder / "files" / digest[:2] / digest[2:]).unlink()
        else:
            assert self.server is not None
            self.server.client().delete_object(Bucket=BUCKET, Key=self._key(digest))


@pytest.fixture(params=["folder", "s3"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    if request.param == "folder":
        return Remote("folder", str(tmp_path / "remote"), folder=tmp_path / "remote")
    server: SeaweedServer = request.getfixturevalue("seaweed")
    prefix: str = request.getfixturevalue("s3_prefix")
    # Loose objects, as a remote written before packs holds them: these tests reach into the
    # remote per object. Packed remotes have their own tests (tests/test_packs.py).
    return Remote("s3", prefix, ["-o", f"endpoint_url={server.endpoint}", "-o", "pack_threshold=0"], server=server)


def setup(project: Project, remote: Remote, raw: str = "raw data\n") -> None:
    project.pipeline(PIPELINE)
    project.write("data/raw.txt", raw)
    project.pivot("run")
    project.pivot("remote", "add", "store", remote.url, "--default", *remote.options)
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "pipeline")


def clone(project: Project, tmp_path: Path, branch: str = "main") -> Project:
    dest = tmp_path / f"clone-{uuid.uuid4().hex[:6]}"
    subprocess.run(["git", "clone", "-q", "-b", branch, str(project.root), str(dest)], check=True)
    return Project(dest)


def out_hashes(project: Project, stage: str = "build") -> dict[str, str]:
    lock = yaml.safe_load(project.lock(stage))
    return {o["path"]: o["hash"] for o in lock["outs"]}


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# -- the contract, on every backend ----------------------------------------------------------------


def test_round_trip_into_a_fresh_clone(project: Project, remote: Remote, tmp_path: Path) -> None:
    setup(project, remote)
    assert f"pushed {OBJECTS} object(s)" in project.pivot("push").stdout
    assert len(remote.objects()) == OBJECTS
    assert f"'store' already has all {OBJECTS} object(s)" in project.pivot("push").stdout

    other = clone(project, tmp_path)
    assert f"fetched {OBJECTS} object(s)" in other.pivot("pull").stdout
    assert other.read("model.bin") == project.read("model.bin")
    assert other.read("features/sub/f3.txt") == "raw data\n3\n"
    assert other.pivot("status").stdout.strip() == "all 1 stage(s) up to date"
    assert other.pivot("run").stdout.strip() == "nothing to run: 1 stage(s) up to date"
    assert "already has all" in other.pivot("fetch").stdout.replace("the cache already has all", "already has all")


def test_an_interrupted_push_finishes_when_rerun(project: Project, remote: Remote) -> None:
    setup(project, remote)
    project.pivot("push")
    hashes = out_hashes(project)
    remote.delete(hashes["model.bin"])  # as if the push had stopped before this object
    remote.delete(hashes["features"])
    (project.root / ".pivot/tmp/remotes.db").unlink(missing_ok=True)  # a stopped push remembers nothing
    assert "pushed 2 object(s)" in project.pivot("push").stdout
    assert len(remote.objects()) == OBJECTS


def test_gc_from_another_clone_makes_push_ask_again(project: Project, remote: Remote, tmp_path: Path) -> None:
    setup(project, remote)
    project.pivot("push")
    project.git("checkout", "-q", "-b", "feature")
    project.write("data/raw.txt", "feature data\n")
    project.pivot("run")
    project.git("commit", "-q", "-am", "feature")
    project.pivot("push")
    assert len(remote.objects()) == 2 * OBJECTS
    other = clone(project, tmp_path)  # main only: the feature branch's objects are garbage to it
    other.pivot("remote", "add", "store", remote.url, "--default", "--force", *remote.options)
    assert f"removed {OBJECTS} object(s)" in other.pivot("gc", "--remote", "store", "--min-age", "0", "--yes").stdout
    assert f"pushed {OBJECTS} object(s)" in project.pivot("push").stdout
    assert len(remote.objects()) == 2 * OBJECTS
    assert "already has all" in project.pivot("push").stdout


def test_an_emptied_remote_is_filled_again(project: Project, remote: Remote) -> None:
    setup(project, remote)
    project.pivot("push")
    for digest in remote.objects():
        remote.delete(digest)
    remote.clear_marker()
    assert f"pushed {OBJECTS} object(s)" in project.pivot("push").stdout
    assert len(remote.objects()) == OBJECTS


def test_an_object_deleted_by_hand_is_mended_by_verify_then_push(project: Project, remote: Remote) -> None:
    setup(project, remote)
    project.pivot("push")
    gone = out_hashes(project)["model.bin"]
    remote.delete(gone)
    if remote.kind == "s3":  # remembered as pushed, and nothing told this clone otherwise
        assert "already has all" in project.pivot("push").stdout
    assert "model.bin" in one_error_line(project.pivot("verify", "--remote", check=False))
    assert "pushed 1 object(s)" in project.pivot("push").stdout
    assert gone in remote.objects()


def test_a_corrupted_remote_object_never_reaches_the_cache(project: Project, remote: Remote, tmp_path: Path) -> None:
    setup(project, remote)
    project.pivot("push")
    digest = out_hashes(project)["model.bin"]
    remote.write(digest, b"not what was pushed")
    other = clone(project, tmp_path)
    error = one_error_line(other.pivot("pull", check=False))
    assert "1 object(s) were refused because their bytes do not match their hash (model.bin)" in error
    assert not (other.root / ".pivot/cache/files" / digest[:2] / digest[2:]).exists()
    assert not other.exists("model.bin")
    assert other.read("features/sub/f0.txt") == "raw data\n0\n"  # the rest did arrive
    assert not list((other.root / ".pivot/cache/tmp").glob("dl.*"))


def test_objects_missing_on_the_remote_are_named(project: Project, remote: Remote, tmp_path: Path) -> None:
    setup(project, remote)
    if remote.folder is not None:
        remote.folder.mkdir()  # an empty remote (a missing folder is a different error)
    other = clone(project, tmp_path)
    error = one_error_line(other.pivot("fetch", check=False))
    assert "2 object(s) are missing on the remote (features, model.bin)" in error  # features: its manifest


def test_gc_keeps_what_other_branches_need(project: Project, remote: Remote, tmp_path: Path) -> None:
    setup(project, remote)
    project.git("checkout", "-q", "-b", "feature")
    project.write("data/raw.txt", "feature data\n")
    project.pivot("run")
    project.git("commit", "-q", "-am", "feature")
    project.pivot("push")
    project.git("checkout", "-q", "main")
    project.pivot("push")
    assert len(remote.objects()) == 2 * OBJECTS

    assert "would remove 0 object(s)" in project.pivot("gc", "--all-branches", "--dry-run").stdout
    assert "removed 0 object(s)" in project.pivot("gc", "-r", "store", "--all-branches").stdout
    assert f"would remove {OBJECTS} object(s)" in project.pivot("gc", "--workspace", "--dry-run").stdout
    assert len(project.cache_objects()) == 2 * OBJECTS
    assert f"removed {OBJECTS} object(s)" in project.pivot("gc", "--workspace", "--yes").stdout
    assert len(project.cache_objects()) == OBJECTS
    recent = project.pivot("gc", "--workspace", "--remote", "store")  # just pushed: a push in progress may need them
    assert "removed 0 object(s)" in recent.stdout and len(remote.objects()) == 2 * OBJECTS
    assert f"kept {OBJECTS} unreferenced object(s)" in recent.stderr and "--min-age 0" in recent.stderr
    assert f"removed {OBJECTS} object(s)" in project.pivot("gc", "--workspace", "--remote", "store", "--min-age", "0",
                                                              "--yes").stdout
    assert len(remote.objects()) == OBJECTS
    assert f"fetched {OBJECTS} object(s)" in clone(project, tmp_path).pivot("pull").stdout


def test_verify_remote_fails_until_pushed(project: Project, remote: Remote) -> None:
    setup(project, remote)
    if remote.folder is not None:
        remote.folder.mkdir()
    error = one_error_line(project.pivot("verify", "--remote", check=False))
    assert f"{OBJECTS} object(s) of 2 output(s) are not on remote 'store': features, model.bin" in error
    project.pivot("push")
    assert "remote 'store' holds every output" in project.pivot("verify", "--remote").stdout
    remote.delete(sorted(remote.objects())[0])
    one_error_line(project.pivot("verify", "--remote", check=False))


# -- S3 failures: an error, never "missing" ---------------------------------------------------------


def test_an_unreachable_endpoint_is_one_clear_error(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    setup(project, Remote("s3", f"s3://{BUCKET}/x", ["-o", f"endpoint_url=http://127.0.0.1:{free_port()}",
                                                      "-o", "retries=1"]))
    for command in ("push", "pull", "verify"):
        start = time.monotonic()
        args = (command, "--remote") if command == "verify" else (command,)
        error = one_error_line(project.pivot(*args, check=False))
        assert "Could not connect to the endpoint URL" in error and "endpoint_url" in error
        assert "missing" not in error
        assert time.monotonic() - start < 15


def test_missing_credentials_are_one_clear_error(project: Project, seaweed: SeaweedServer, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    setup(project, Remote("s3", f"s3://{BUCKET}/y", ["-o", f"endpoint_url={seaweed.endpoint}"]))
    for command in ("push", "fetch"):
        error = one_error_line(project.pivot(command, check=False))
        assert "Unable to locate credentials" in error and "AWS_ACCESS_KEY_ID" in error


def test_a_missing_bucket_is_named(project: Project, seaweed: SeaweedServer, s3_prefix: str) -> None:
    setup(project, Remote("s3", "s3://no-such-bucket/p", ["-o", f"endpoint_url={seaweed.endpoint}"]))
    assert "bucket 'no-such-bucket' does not exist" in one_error_line(project.pivot("push", check=False))


# -- requests per operation (the baseline that packing objects will lower) -------------------------


@pytest.fixture
def counted(seaweed: SeaweedServer, s3_prefix: str) -> Iterator[tuple[Remote, CountingProxy]]:
    """An S3 remote whose endpoint is a proxy counting every request on its way to SeaweedFS."""
    with CountingProxy(seaweed.endpoint) as proxy:
        yield Remote("s3", s3_prefix, ["-o", f"endpoint_url={proxy.endpoint}"], server=seaweed), proxy


def test_requests_per_operation_on_s3(project: Project, counted: tuple[Remote, CountingProxy],
                                      tmp_path: Path) -> None:
    """Request counts against SeaweedFS (7 objects: OBJECTS, all small: packed). Each bound is the
    number measured when this test was written; fewer is better, more is a regression to explain.
    Before packs: 24 requests to push, 9 to pull, 9 to push again after forgetting."""
    remote, proxy = counted
    setup(project, remote)
    proxy.reset()
    project.pivot("push")
    # 13: HEAD bucket, GET + PUT of the generation token, LIST packs/, LIST one prefix of files/
    # then all of files/ (loose objects an older push left), then a pack and its index for the
    # files and another pair for the directory's manifest (uploaded after the files); then the
    # run record: LIST runs/, its run pack and index.
    assert proxy.count() <= 13, proxy.requests
    assert proxy.by_method()["PUT"] == 7, proxy.requests
    assert sum(1 for m, p in proxy.requests if m == "PUT" and "/files/" in p) == 0, proxy.requests

    proxy.reset()
    assert "already has all" in project.pivot("push").stdout
    # 3: HEAD bucket, GET the generation token (the objects are remembered as pushed), LIST runs/
    # (the run pack's index was read before and is kept).
    assert proxy.count() <= 3, proxy.requests

    other = clone(project, tmp_path)
    proxy.reset()
    assert f"fetched {OBJECTS} object(s)" in other.pivot("pull").stdout
    # 7: HEAD bucket, GET the generation token, LIST packs/, GET each index, one ranged GET per pack.
    assert proxy.count() <= 7, proxy.requests
    assert set(proxy.by_method()) == {"HEAD", "GET"}, proxy.requests

    (project.root / ".pivot/tmp/remotes.db").unlink()  # remembers nothing: must ask the remote
    proxy.reset()
    assert "already has all" in project.pivot("push").stdout
    # 6: HEAD bucket, GET the generation token, LIST packs/, GET each index, LIST runs/.
    assert proxy.count() <= 6, proxy.requests
    assert "PUT" not in proxy.by_method(), proxy.requests


# -- configuration -------------------------------------------------------------------------------------


def test_remote_add_keeps_secrets_out_of_the_committed_config(project: Project) -> None:
    project.pivot("remote", "add", "a", "s3://bucket/p", "-o", "endpoint_url=http://x:1",
                  "-o", "secret_access_key=S3CRET", "-o", "profile=dev", "--default")
    project.pivot("remote", "add", "b", "/srv/cache")
    committed = project.read(".pivot/config.yaml")
    assert "S3CRET" not in committed and "profile: dev" in committed
    assert "S3CRET" in project.read(".pivot/config.local.yaml")
    listing = project.pivot("remote", "list").stdout
    assert "a\ts3://bucket/p (default)" in listing and "***" in listing and "S3CRET" not in listing
    project.pivot("remote", "default", "b")
    assert project.pivot("remote", "default").stdout.strip() == "b"
    assert "already exists" in one_error_line(project.pivot("remote", "add", "b", "/x", check=False))
    project.pivot("remote", "remove", "b")
    assert "unknown remote 'b'" in one_error_line(project.pivot("push", "-r", "b", check=False))
    assert "unknown storage protocol 'nope://'" in one_error_line(
        project.pivot("remote", "add", "c", "nope://x", check=False))


def test_remote_add_refuses_an_empty_url(project: Project) -> None:
    """An empty URL was stored, and every remote command (list, push) then failed on it."""
    for url in ("", "  "):
        proc = project.pivot("remote", "add", "d", url, check=False)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "URL of remote 'd' is empty" in one_error_line(proc)
    assert "remotes" not in project.read(".pivot/config.yaml")
    assert project.pivot("remote", "list").returncode == 0


def test_gc_of_a_folder_remote_clears_what_a_killed_push_left(project: Project, tmp_path: Path) -> None:
    remote = Remote("folder", str(tmp_path / "remote"), folder=tmp_path / "remote")
    setup(project, remote)
    project.pivot("push")
    digest = out_hashes(project)["model.bin"]
    folder = remote.folder / "files" / digest[:2]  # type: ignore[operator]
    old, fresh = folder / f".tmp.{digest[2:]}.123.456", folder / f".tmp.{digest[2:]}.789.1"
    old.write_bytes(b"half an obj")
    fresh.write_bytes(b"a push in progress")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    dry = project.pivot("gc", "-r", "store", "--dry-run")
    assert "would remove 1 temporary file(s) (11 B)" in dry.stderr and old.exists()
    gc = project.pivot("gc", "-r", "store")
    assert "removed 1 temporary file(s) (11 B) left by interrupted pushes" in gc.stderr
    assert not old.exists() and fresh.exists()
    assert len(remote.objects()) == OBJECTS  # the objects themselves are all needed and kept


def test_remote_gc_removes_unreferenced_objects_once_they_are_old(project: Project, tmp_path: Path) -> None:
    remote = Remote("folder", str(tmp_path / "remote"), folder=tmp_path / "remote")
    setup(project, remote)
    project.pivot("push")
    first = set(remote.objects())
    project.write("data/raw.txt", "newer data\n")
    project.pivot("run")
    project.pivot("push")
    assert len(remote.objects()) == 2 * OBJECTS
    for digest in first:  # the first version's objects were pushed two hours ago
        path = remote.folder / "files" / digest[:2] / digest[2:]  # type: ignore[operator]
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    gc = project.pivot("gc", "-r", "store", "--workspace", "--yes")
    assert f"removed {OBJECTS} object(s)" in gc.stdout and "unreferenced" not in gc.stderr
    assert not remote.objects() & first and len(remote.objects()) == OBJECTS
    bad = project.pivot("gc", "-r", "store", "--min-age", "-1", check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_push_without_a_remote_says_how_to_add_one(project: Project) -> None:
    assert "pivot remote add NAME URL --default" in one_error_line(project.pivot("push", check=False))


# -- the pre-push hook ---------------------------------------------------------------------------------


def test_pre_push_hook_uploads_what_the_pushed_commits_need(project: Project, tmp_path: Path) -> None:
    folder = Remote("folder", str(tmp_path / "store"), folder=tmp_path / "store")
    setup(project, folder)
    project.pivot("hooks", "install")
    bare = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    project.git("remote", "add", "origin", str(bare))
    proc = subprocess.run(["git", "push", "-q", "origin", "main"], cwd=project.root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"uploaded {OBJECTS} object(s)" in proc.stderr
    assert len(folder.objects()) == OBJECTS
