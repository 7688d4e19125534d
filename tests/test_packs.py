"""Packed remotes (pivot/remote/packfile.py, packs.py, repack.py) against SeaweedFS: small objects
travel in content-named packs with an index each; pulls read byte ranges and verify every
object; a damaged pack or index is refused by name; a killed push leaves the remote consistent;
gc repacks; no-ops cost a constant few requests however many objects there are."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Project
from seaweed import S3_BUCKET, CountingProxy, Faults, SeaweedServer
from test_remote import clone, one_error_line

from pivot.remote.packfile import parse_index

FILES = 40
PIPELINE = """\
import os
from pivot import stage

@stage(deps=["n.txt"], outs=["many", "big.bin"])
def build():
    n = int(open("n.txt").read())
    os.makedirs("many", exist_ok=True)
    for i in range({files}):
        v = n if i >= {same} else 0  # the first few files are the same in every version
        open(f"many/f{{i}}.txt", "w").write(f"version {{v}} object {{i}}\\n" * (i + 1))
    open("big.bin", "wb").write(bytes(range(256)) * 8192)  # 2 MiB: above the threshold, loose
"""
SAME = 3
OBJECTS = FILES + 2  # the files of `many`, its manifest, big.bin
CHANGED = FILES - SAME + 1  # what a new version adds: the files that change, and the manifest


@pytest.fixture
def proxy(seaweed: SeaweedServer) -> Iterator[CountingProxy]:
    with CountingProxy(seaweed.endpoint) as p:
        yield p


def keys(seaweed: SeaweedServer, s3_prefix: str, folder: str) -> dict[str, int]:
    """Key name -> size under `folder` of the remote."""
    root = s3_prefix.split("/", 3)[3]
    pages = seaweed.client().get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix=f"{root}/{folder}/")
    return {o["Key"][len(root) + len(folder) + 2:]: o["Size"] for page in pages for o in page.get("Contents", [])}


def key(s3_prefix: str, rel: str) -> str:
    return f"{s3_prefix.split('/', 3)[3]}/{rel}"


def setup(project: Project, endpoint: str, s3_prefix: str, *options: str, files: int = FILES) -> None:
    project.pipeline(PIPELINE.format(files=files, same=SAME))
    project.write("n.txt", "1")
    project.pivot("run")
    project.pivot("remote", "add", "store", s3_prefix, "--default", "-o", f"endpoint_url={endpoint}", *options)
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "pipeline")


def committed(project: Project, pipeline: str, endpoint: str, s3_prefix: str) -> None:
    """`pipeline` run and committed, with the S3 remote at `endpoint` as the default."""
    project.pipeline(pipeline)
    project.pivot("run")
    project.pivot("remote", "add", "store", s3_prefix, "--default", "-o", f"endpoint_url={endpoint}")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "pipeline")


def packed_objects(seaweed: SeaweedServer, s3_prefix: str) -> set[str]:
    """Every object the remote's indexes list (each index checked as Pivot checks it)."""
    found: set[str] = set()
    for name in keys(seaweed, s3_prefix, "packs"):
        if name.endswith(".idx"):
            body = seaweed.client().get_object(Bucket=S3_BUCKET, Key=key(s3_prefix, f"packs/{name}"))["Body"].read()
            found.update(e.digest for e in parse_index(name[:-4], body)[1])
    return found


def same_outputs(a: Project, b: Project) -> None:
    for i in range(FILES):
        assert (b.root / f"many/f{i}.txt").read_bytes() == (a.root / f"many/f{i}.txt").read_bytes()
    assert (b.root / "big.bin").read_bytes() == (a.root / "big.bin").read_bytes()
    b.pivot("verify")


def test_small_objects_travel_in_packs_and_come_back_byte_identical(
        project: Project, seaweed: SeaweedServer, s3_prefix: str, tmp_path: Path) -> None:
    setup(project, seaweed.endpoint, s3_prefix)
    assert f"pushed {OBJECTS} object(s)" in project.pivot("push").stdout
    loose = keys(seaweed, s3_prefix, "files")
    assert len(loose) == 1 and max(loose.values()) == 2 * 1024 * 1024  # only big.bin, above the threshold
    packs = keys(seaweed, s3_prefix, "packs")
    # the files' pack, then the manifest's (uploaded after: a directory is complete once its manifest is)
    assert sorted(n.rsplit(".", 1)[1] for n in packs) == ["idx", "idx", "pack", "pack"]
    assert len(packed_objects(seaweed, s3_prefix)) == OBJECTS - 1

    other = clone(project, tmp_path)
    assert f"fetched {OBJECTS} object(s)" in other.pivot("pull").stdout
    same_outputs(project, other)


def test_a_loose_remote_stays_readable_and_a_push_adds_packs_beside(
        project: Project, seaweed: SeaweedServer, s3_prefix: str, tmp_path: Path) -> None:
    setup(project, seaweed.endpoint, s3_prefix, "-o", "pack_threshold=0")  # as Pivot before packs wrote
    project.pivot("push")
    assert len(keys(seaweed, s3_prefix, "files")) == OBJECTS and not keys(seaweed, s3_prefix, "packs")
    project.pivot("remote", "add", "store", s3_prefix, "--default", "--force", "-o", f"endpoint_url={seaweed.endpoint}")
    project.write("n.txt", "2")
    project.pivot("run")
    project.git("commit", "-qam", "v2")
    assert f"pushed {CHANGED} object(s)" in project.pivot("push").stdout  # nor did big.bin
    assert len(packed_objects(seaweed, s3_prefix)) == CHANGED
    assert len(keys(seaweed, s3_prefix, "files")) == OBJECTS  # the loose ones are still there

    other = clone(project, tmp_path)  # at v2: packed objects
    other.pivot("pull")
    same_outputs(project, other)
    other.git("checkout", "-q", "HEAD~1")  # at v1: loose objects
    assert f"fetched {CHANGED} object(s)" in other.pivot("pull").stdout
    assert (other.root / "many/f5.txt").read_text().startswith("version 1 object 5\n")


def test_a_damaged_pack_is_refused_object_by_object_and_names_the_pack(
        project: Project, seaweed: SeaweedServer, s3_prefix: str, tmp_path: Path) -> None:
    setup(project, seaweed.endpoint, s3_prefix)
    project.pivot("push")
    client = seaweed.client()
    packs = keys(seaweed, s3_prefix, "packs")
    files_pack = max((n for n in packs if n.endswith(".pack")), key=lambda n: packs[n])
    body = bytearray(client.get_object(Bucket=S3_BUCKET, Key=key(s3_prefix, f"packs/{files_pack}"))["Body"].read())
    body[20] ^= 0xFF  # inside the first object
    client.put_object(Bucket=S3_BUCKET, Key=key(s3_prefix, f"packs/{files_pack}"), Body=bytes(body))

    other = clone(project, tmp_path)
    proc = other.pivot("pull", "--json", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)["corrupt"] == 1
    assert f"packs/{files_pack}" in proc.stderr and "damaged" in proc.stderr, proc.stderr
    cached = {p.parent.name + p.name for p in other.cache_objects()}
    assert len(cached) == OBJECTS - 1  # every other object arrived, the damaged one did not


@pytest.mark.parametrize("damage", ["truncated", "checksum", "garbage"])
def test_a_bad_index_is_refused_by_name_and_its_objects_are_pushed_again(
        project: Project, seaweed: SeaweedServer, s3_prefix: str, tmp_path: Path, damage: str) -> None:
    setup(project, seaweed.endpoint, s3_prefix)
    project.pivot("push")
    client = seaweed.client()
    idx = next(n for n, size in sorted(keys(seaweed, s3_prefix, "packs").items(), key=lambda kv: -kv[1])
               if n.endswith(".idx"))
    body = client.get_object(Bucket=S3_BUCKET, Key=key(s3_prefix, f"packs/{idx}"))["Body"].read()
    bad = {"truncated": body[: len(body) // 2], "checksum": body.replace(b" 8 ", b" 9 ", 1),
           "garbage": b"\x00\xff" * 50}[damage]
    assert bad != body
    client.put_object(Bucket=S3_BUCKET, Key=key(s3_prefix, f"packs/{idx}"), Body=bad)

    other = clone(project, tmp_path)  # remembers nothing: reads the indexes
    proc = other.pivot("pull", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"packs/{idx}" in proc.stderr + proc.stdout and "refused" in proc.stderr + proc.stdout

    (project.root / ".pivot/tmp/remotes.db").unlink()
    pushed = project.pivot("push")
    assert f"pushed {FILES} object(s)" in pushed.stdout, pushed.stdout  # the files the bad index listed
    other.pivot("pull")
    same_outputs(project, other)


def test_a_push_killed_between_pack_and_index_leaves_the_remote_consistent(
        project: Project, proxy: CountingProxy, seaweed: SeaweedServer, s3_prefix: str, tmp_path: Path) -> None:
    setup(project, proxy.endpoint, s3_prefix, "-o", "retries=0")
    proxy.inject(Faults(fail_on=lambda method, path: method == "PUT" and path.endswith(".idx")))
    error = one_error_line(project.pivot("push", check=False))
    assert "uploading pack" in error and "of 'many'" in error, error
    assert any(n.endswith(".pack") for n in keys(seaweed, s3_prefix, "packs"))
    assert not any(n.endswith(".idx") for n in keys(seaweed, s3_prefix, "packs"))

    other = clone(project, tmp_path)  # the pack without its index counts for nothing
    proc = other.pivot("pull", "--json", check=False)
    # the manifest of `many` (so its files cannot even be listed) and big.bin (the push stopped first)
    assert proc.returncode == 1 and json.loads(proc.stdout)["missing"] == 2, proc.stdout
    assert not other.cache_objects()

    proxy.inject(Faults())
    assert f"pushed {OBJECTS} object(s)" in project.pivot("push").stdout
    other.pivot("pull")
    same_outputs(project, other)


def test_gc_repacks_mostly_dead_packs_and_removes_orphans(
        project: Project, seaweed: SeaweedServer, s3_prefix: str, tmp_path: Path) -> None:
    setup(project, seaweed.endpoint, s3_prefix)
    project.pivot("push")
    first = keys(seaweed, s3_prefix, "packs")
    # an orphan: a pack without an index, as a killed push leaves
    seaweed.client().put_object(Bucket=S3_BUCKET, Key=key(s3_prefix, f"packs/{'0' * 32}.pack"), Body=b"PIVOTPK1x")
    project.write("n.txt", "2")  # v2: all files change but the first (smallest) SAME
    project.pivot("run")
    project.git("commit", "-qam", "v2")
    project.pivot("push")
    kept = project.pivot("gc", "-r", "store", "--min-age", "0", "--yes")  # v1 is in history: kept
    assert "repack" not in kept.stderr and "removed 1 pack(s) without an index" in kept.stderr, kept.stderr

    dry = project.pivot("gc", "-r", "store", "--workspace", "--min-age", "0", "--dry-run")
    assert f"would repack 1 mostly unused pack(s), keeping their {SAME} live object(s)" in dry.stderr, dry.stderr
    assert "would remove 1 pack(s) nothing refers to" in dry.stderr, dry.stderr  # v1's manifest
    assert set(first) <= set(keys(seaweed, s3_prefix, "packs"))
    done = project.pivot("gc", "-r", "store", "--workspace", "--min-age", "0", "--yes")
    assert "repacked 1 mostly unused" in done.stderr, done.stderr
    after = keys(seaweed, s3_prefix, "packs")
    assert not set(first) & set(after), (first, after)  # the v1 packs are gone, their live part moved
    assert f"{'0' * 32}.pack" not in after
    assert len(packed_objects(seaweed, s3_prefix)) == FILES + 1

    other = clone(project, tmp_path)
    assert f"fetched {OBJECTS} object(s)" in other.pivot("pull").stdout
    same_outputs(project, other)


def test_two_clones_pushing_at_once_both_land(
        project: Project, seaweed: SeaweedServer, s3_prefix: str, tmp_path: Path) -> None:
    setup(project, seaweed.endpoint, s3_prefix)
    other = clone(project, tmp_path)
    other.pivot("run")  # the same objects, computed again in the clone
    other.write("n.txt", "2")
    other.pivot("run")
    other.git("commit", "-qam", "v2 in the clone")
    procs: list[subprocess.CompletedProcess[str]] = []
    threads = [threading.Thread(target=lambda p=p: procs.append(p.pivot("push", check=None)))
               for p in (project, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.returncode for p in procs] == [0, 0], procs
    third = clone(other, tmp_path)
    third.pivot("pull")
    assert (third.root / "many/f3.txt").read_text().startswith("version 2 object 3")
    third.git("checkout", "-q", "HEAD~1")
    third.pivot("pull")
    same_outputs(project, third)


def test_packed_transfers_ride_out_resets_and_slowdowns(
        project: Project, proxy: CountingProxy, s3_prefix: str, tmp_path: Path) -> None:
    setup(project, proxy.endpoint, s3_prefix)
    proxy.inject(Faults(reset_every=2, slowdown_every=3))
    assert f"pushed {OBJECTS} object(s)" in project.pivot("push").stdout
    assert len(proxy.faults) >= 3, proxy.faults
    other = clone(project, tmp_path)
    proxy.reset()
    assert f"fetched {OBJECTS} object(s)" in other.pivot("pull").stdout
    assert len(proxy.faults) >= 2, proxy.faults
    same_outputs(project, other)


def test_a_folder_remote_packs_when_asked(project: Project, tmp_path: Path) -> None:
    project.pipeline(PIPELINE.format(files=FILES, same=SAME))
    project.write("n.txt", "1")
    project.pivot("run")
    project.pivot("remote", "add", "store", str(tmp_path / "r"), "--default", "-o", "pack_threshold=65536")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "pipeline")
    assert f"pushed {OBJECTS} object(s)" in project.pivot("push").stdout
    assert len(list((tmp_path / "r/packs").glob("*.idx"))) == 2
    assert len([p for p in (tmp_path / "r/files").rglob("*") if p.is_file()]) == 1
    other = clone(project, tmp_path)
    other.pivot("pull")
    same_outputs(project, other)


def test_a_bad_pack_option_is_one_clear_line(project: Project, tmp_path: Path) -> None:
    project.pipeline(PIPELINE.format(files=2, same=SAME))
    project.write("n.txt", "1")
    project.pivot("run")
    project.pivot("remote", "add", "store", str(tmp_path / "r"), "--default", "-o", "pack_threshold=lots")
    error = one_error_line(project.pivot("push", check=False))
    assert "pack_threshold='lots'" in error and "pivot remote add store" in error, error


# -- constant-cost no-ops at 100,000 objects ----------------------------------------------------------------

WIDE = """\
import os
from pivot import stage

@stage(outs=["wide"])
def build():
    os.makedirs("wide", exist_ok=True)
    for i in range(100_000):
        with open(f"wide/{i}", "w") as f:
            f.write(str(i))
"""


def test_no_ops_with_100k_objects_cost_a_constant_few_requests(
        project: Project, proxy: CountingProxy, s3_prefix: str, tmp_path: Path) -> None:
    committed(project, WIDE, proxy.endpoint, s3_prefix)
    assert "pushed 100001 object(s)" in project.pivot("push").stdout

    proxy.reset()
    assert "already has all 100001" in project.pivot("push").stdout
    assert proxy.count() <= 5, proxy.requests  # HEAD bucket, GET the generation token
    proxy.reset()
    project.pivot("pull")
    assert proxy.count() <= 5, proxy.requests  # everything is in the cache: HEAD bucket

    other = clone(project, tmp_path)  # a fresh clone: nothing remembered, nothing cached
    proxy.reset()
    status = other.pivot("status", "--remote")
    assert "outputs on remote 'store': run 'pivot pull'" in status.stdout, status.stdout
    # HEAD bucket, GET the token, LIST packs/, GET the files' index, GET the manifest (loose: 4 MB)
    assert proxy.count() <= 5, proxy.requests


# -- a subtree of a directory output ------------------------------------------------------------------

TREE = """\
import os
from pivot import stage

@stage(outs=["images"])
def build():
    for kind in ("cats", "dogs"):
        os.makedirs(f"images/{kind}", exist_ok=True)
        for i in range(20):
            open(f"images/{kind}/{i}.txt", "w").write(f"{kind} {i}\\n" * 50)
"""


def test_pulling_a_subtree_fetches_only_its_objects(
        project: Project, proxy: CountingProxy, s3_prefix: str, tmp_path: Path) -> None:
    committed(project, TREE, proxy.endpoint, s3_prefix)
    project.pivot("push")

    other = clone(project, tmp_path)
    proxy.reset()
    pulled = other.pivot("pull", "images/cats")
    assert "fetched 21 object(s)" in pulled.stdout, pulled.stdout  # the manifest, then the cats
    assert "restored 20 output(s)" in pulled.stdout, pulled.stdout
    for i in range(20):
        cat = f"images/cats/{i}.txt"
        assert (other.root / cat).read_bytes() == (project.root / cat).read_bytes()
    assert not (other.root / "images/dogs").exists()
    assert len(other.cache_objects()) == 21  # the manifest and the cats
    pack_reads = [p for m, p in proxy.requests if m == "GET" and p.split("?")[0].endswith(".pack")]
    assert len(pack_reads) == 2, proxy.requests  # the manifest's range, the cats' (coalesced) range

    # a single file, named relative to the current folder
    other.pivot("pull", "dogs/3.txt", cwd=other.root / "images")
    assert (other.root / "images/dogs/3.txt").read_text() == "dogs 3\n" * 50
    assert sorted(p.name for p in (other.root / "images/dogs").iterdir()) == ["3.txt"]

    error = one_error_line(other.pivot("pull", "images/birds", check=False))
    assert "'images/birds' is not in directory 'images'" in error, error
    error = one_error_line(other.pivot("pull", "nowhere", check=False))
    assert "'nowhere' is neither a stage" in error, error
    other.pivot("pull")  # and the rest
    assert len(list((other.root / "images/dogs").iterdir())) == 20


# -- a large file: a multipart upload, hashed on the way ----------------------------------------------

LARGE = """\
from pivot import stage

@stage(outs=["large.bin"])
def build():
    with open("large.bin", "wb") as f:
        for i in range(40):  # 40 MiB: above the size moved in one request
            f.write(i.to_bytes(4, "little") * (256 * 1024))
"""


def test_a_large_file_goes_up_in_parts_and_a_damaged_one_never_lands(
        project: Project, proxy: CountingProxy, seaweed: SeaweedServer, s3_prefix: str, tmp_path: Path) -> None:
    committed(project, LARGE, proxy.endpoint, s3_prefix)
    digest = next(p.parent.name + p.name for p in project.cache_objects())
    cached = project.root / ".pivot/cache/files" / digest[:2] / digest[2:]
    good = cached.read_bytes()
    cached.chmod(0o644)
    cached.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # damaged in the cache, same size

    proc = project.pivot("push", "--json", check=False)
    assert proc.returncode == 1 and json.loads(proc.stdout)["corrupt"] == 1, proc
    assert not keys(seaweed, s3_prefix, "files")  # nothing published under its name
    uploads = seaweed.client().list_multipart_uploads(Bucket=S3_BUCKET, Prefix=key(s3_prefix, ""))
    assert not uploads.get("Uploads"), uploads  # the multipart upload was aborted

    cached.write_bytes(good)
    proxy.reset()
    project.pivot("push")
    parts = [p for m, p in proxy.requests if m == "PUT" and "partNumber=" in p]
    assert len(parts) == 5, proxy.requests  # 40 MiB in 8 MiB parts
    other = clone(project, tmp_path)
    other.pivot("pull")
    assert (other.root / "large.bin").read_bytes() == good


def test_a_push_of_outputs_the_remote_has_whole_asks_nothing_more(
        project: Project, proxy: CountingProxy, s3_prefix: str) -> None:
    """After a push, the remote index knows each output is whole there: the next push neither
    expands directories nor looks in the local cache (which may have been emptied by gc)."""
    setup(project, proxy.endpoint, s3_prefix)
    project.pivot("push")
    project.pivot("gc", "--workspace", "--yes")  # keeps everything: the workspace needs it
    for path in project.cache_objects():
        path.unlink()  # as if another disk held the cache
    proxy.reset()
    assert f"already has all {OBJECTS} object(s)" in project.pivot("push").stdout
    assert proxy.count() <= 3, proxy.requests  # bucket, generation token, run records
