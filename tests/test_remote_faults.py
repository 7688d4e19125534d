"""Remotes under faults: an S3 endpoint (SeaweedFS behind tests/seaweed.py's proxy) that resets
connections and answers 503 SlowDown; transfers that still fail, then resume; credentials kept
out of every message; `--json` totals and the progress line."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PIVOT, Project
from seaweed import S3_BUCKET, CountingProxy, Faults, SeaweedServer
from test_remote import clone, one_error_line

from pivot.hashing import hash_file

FILES = 50
OBJECTS = FILES + 1  # the files of `many` and its manifest
PIPELINE = f"""\
import os
from pivot import stage

@stage(outs=["many"])
def build():
    os.makedirs("many", exist_ok=True)
    for i in range({FILES}):
        open(f"many/f{{i}}.txt", "w").write(f"object {{i}}\\n" * (i + 1))
"""


@pytest.fixture
def proxy(seaweed: SeaweedServer) -> Iterator[CountingProxy]:
    with CountingProxy(seaweed.endpoint) as p:
        yield p


def setup(project: Project, proxy: CountingProxy, s3_prefix: str, *options: str) -> None:
    """A remote of loose objects (one request per object, so that faults land on objects):
    packed remotes under the same faults are in tests/test_packs.py."""
    project.pipeline(PIPELINE)
    project.pivot("run")
    project.pivot("remote", "add", "store", s3_prefix, "--default", "-o", f"endpoint_url={proxy.endpoint}",
                  "-o", "pack_threshold=0", *options)
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "pipeline")


def on_remote(seaweed: SeaweedServer, s3_prefix: str) -> set[str]:
    prefix = s3_prefix.split("/", 3)[3] + "/files/"
    pages = seaweed.client().get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix=prefix)
    return {"".join(o["Key"].rsplit("/", 2)[1:]) for page in pages for o in page.get("Contents", [])}


def object_requests(proxy: CountingProxy, method: str) -> int:
    return sum(1 for m, path in proxy.requests if m == method and "/files/" in path)


def same_outputs(a: Project, b: Project) -> None:
    for i in range(FILES):
        assert (b.root / f"many/f{i}.txt").read_bytes() == (a.root / f"many/f{i}.txt").read_bytes()
    assert len(b.cache_objects()) == OBJECTS
    b.pivot("verify")  # every output matches its lock (hashes checked)


# -- retries ---------------------------------------------------------------------------------------


def test_push_and_pull_ride_out_resets_and_slowdowns(project: Project, proxy: CountingProxy, s3_prefix: str,
                                                     tmp_path: Path) -> None:
    setup(project, proxy, s3_prefix)
    proxy.inject(Faults(reset_every=3, slowdown_every=5))
    assert f"pushed {OBJECTS} object(s)" in project.pivot("push").stdout
    pushed_faults = proxy.faults
    assert sum(kind == "reset" for kind, _, _ in pushed_faults) >= 10, pushed_faults
    assert sum(kind == "slowdown" for kind, _, _ in pushed_faults) >= 5, pushed_faults

    other = clone(project, tmp_path)
    proxy.reset()
    assert f"fetched {OBJECTS} object(s)" in other.pivot("pull").stdout
    assert len(proxy.faults) >= 10, proxy.faults
    same_outputs(project, other)


def test_without_retries_the_same_faults_fail(project: Project, proxy: CountingProxy, s3_prefix: str) -> None:
    """The faults above really bite: with retries=0 the push fails, in one line."""
    setup(project, proxy, s3_prefix, "-o", "retries=0")
    proxy.inject(Faults(reset_every=3, slowdown_every=5))
    error = one_error_line(project.pivot("push", check=False))
    assert "remote 'store'" in error


# -- a transfer that still fails: named, kept, resumed -------------------------------------------------


def test_a_failed_push_names_the_object_keeps_the_uploads_and_resumes(
        project: Project, proxy: CountingProxy, seaweed: SeaweedServer, s3_prefix: str) -> None:
    setup(project, proxy, s3_prefix, "-o", "retries=1")
    proxy.inject(Faults(fail_after=25))
    error = one_error_line(project.pivot("push", check=False))
    assert "remote 'store'" in error and "uploading object " in error and "of 'many" in error, error
    digest = error.split("uploading object ", 1)[1].split()[0]
    assert len(digest) == 32 and digest not in on_remote(seaweed, s3_prefix)
    arrived = on_remote(seaweed, s3_prefix)
    assert 0 < len(arrived) < OBJECTS

    proxy.inject(Faults())
    proxy.reset()
    assert f"pushed {OBJECTS - len(arrived)} object(s)" in project.pivot("push").stdout
    assert object_requests(proxy, "PUT") == OBJECTS - len(arrived), proxy.requests
    # What the failed push uploaded was remembered: the rerun asks about none of it.
    asked = {path.rsplit("/", 2)[-2] + path.rsplit("/", 2)[-1].split("?")[0]
             for m, path in proxy.requests if m == "HEAD" and "/files/" in path}
    assert not asked & arrived, asked & arrived
    assert len(on_remote(seaweed, s3_prefix)) == OBJECTS


def test_a_failed_pull_keeps_what_arrived_and_resumes(project: Project, proxy: CountingProxy, s3_prefix: str,
                                                      tmp_path: Path) -> None:
    setup(project, proxy, s3_prefix, "-o", "retries=1")
    project.pivot("push")
    other = clone(project, tmp_path)
    proxy.inject(Faults(fail_after=20))
    error = one_error_line(other.pivot("pull", check=False))
    assert "remote 'store'" in error and "downloading object " in error and "of 'many" in error, error
    kept = other.cache_objects()
    assert 0 < len(kept) < OBJECTS
    for path in kept:
        assert hash_file(str(path)) == path.parent.name + path.name

    proxy.inject(Faults())
    proxy.reset()
    assert f"fetched {OBJECTS - len(kept)} object(s)" in other.pivot("pull").stdout
    assert object_requests(proxy, "GET") == OBJECTS - len(kept), proxy.requests
    same_outputs(project, other)


# -- credentials never shown -------------------------------------------------------------------------

SECRETS = {"access_key_id": "AKIDSECRETVALUE1", "secret_access_key": "SECRETKEYVALUE2",
           "session_token": "SESSIONTOKENVALUE3"}
URL_PASSWORD = "URLPASSWORDVALUE4"


def test_credentials_never_appear_in_messages_or_logs(project: Project, proxy: CountingProxy, s3_prefix: str,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crashes = tmp_path / "crashes"
    crashes.mkdir()
    monkeypatch.setenv("TMPDIR", str(crashes))
    project.pipeline(PIPELINE)
    project.pivot("run")
    endpoint = proxy.endpoint.replace("http://", f"http://someone:{URL_PASSWORD}@")
    options = [x for k, v in SECRETS.items() for x in ("-o", f"{k}={v}")]
    project.pivot("remote", "add", "store", s3_prefix, "--default", "-o", f"endpoint_url={endpoint}",
                  "-o", "retries=0", *options)
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "pipeline")
    proxy.inject(Faults(fail_after=0))  # every request reset: every command fails on the network
    seen = []
    for args in (("push",), ("push", "--json"), ("pull",), ("fetch", "--json"), ("remote", "list"),
                 ("verify", "--remote"), ("gc", "-r", "--yes")):
        proc = project.pivot(*args, check=None)
        seen.append(f"{args}: {proc.stdout}{proc.stderr}")
        if args[0] != "remote":
            assert proc.returncode == 1, proc
    proxy.inject(Faults())  # the server's own refusal (the keys are wrong for it), too
    seen += [project.pivot("push", check=None).stderr]
    logs = [p.read_text(errors="replace") for p in (project.root / ".pivot/tmp").rglob("*.log")]
    logs += [p.read_text(errors="replace") for p in crashes.rglob("*")]
    text = "\n".join(seen + logs)
    assert "remote 'store'" in text
    for secret in [*SECRETS.values(), URL_PASSWORD]:
        assert secret not in text, (secret, text)


# -- --json totals and the progress line ------------------------------------------------------------


def test_json_totals_of_push_fetch_and_pull(project: Project, proxy: CountingProxy, s3_prefix: str,
                                            tmp_path: Path) -> None:
    setup(project, proxy, s3_prefix)
    pushed = json.loads(project.pivot("push", "--json").stdout)
    assert pushed["objects"] == OBJECTS and pushed["already_present"] == 0 and pushed["failed"] == 0
    assert pushed["bytes"] > 0 and pushed["seconds"] >= 0 and pushed["remote"] == "store"
    again = json.loads(project.pivot("push", "--json").stdout)
    assert again["objects"] == 0 and again["already_present"] == OBJECTS

    other = clone(project, tmp_path)
    pulled = json.loads(other.pivot("pull", "--json").stdout)
    assert pulled["objects"] == OBJECTS and pulled["bytes"] == pushed["bytes"] and pulled["restored"] == 1
    fetched = json.loads(other.pivot("fetch", "--json").stdout)
    assert fetched["objects"] == 0 and fetched["already_present"] == OBJECTS and fetched["failed"] == 0


def test_progress_on_a_terminal_shows_objects_bytes_and_rate(project: Project, proxy: CountingProxy,
                                                             s3_prefix: str) -> None:
    setup(project, proxy, s3_prefix)
    main, child = pty.openpty()
    try:
        proc = subprocess.run([PIVOT, "push"], cwd=project.root, stdout=subprocess.PIPE, stderr=child,
                              text=True, timeout=120)
        os.close(child)
        child = -1
        shown = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if child != -1:
            os.close(child)
        os.close(main)
    assert proc.returncode == 0
    line = shown.decode(errors="replace")
    assert f"push to store: {OBJECTS}/{OBJECTS} files," in line and "/s)" in line, line
