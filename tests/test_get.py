"""pivot get (issue #17): a stage output or tracked path as of any git revision, from the local cache
or a remote, written to a destination without touching the workspace or the lock files; and remotes
of config.local.yaml at a commit whose committed configuration predates them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import Project
from seaweed import SeaweedServer
from test_errors import assert_same_tree, cloned, refused, snapshot

PIPELINE = """\
import os
from pivot import stage

@stage(deps=["data/raw.txt"], outs=["clean.txt"])
def prepare():
    open("clean.txt", "w").write(open("data/raw.txt").read().upper())

@stage(deps=["clean.txt"], outs=["features"])
def featurize():
    os.makedirs("features/sub", exist_ok=True)
    text = open("clean.txt").read()
    for i in range(2):
        open(f"features/f{i}.txt", "w").write(text + str(i))
    open("features/sub/deep.txt", "w").write("deep " + text)
"""

# What each path held at the first commit ("v1"), and at HEAD.
V1 = {
    "clean.txt": {"": b"HELLO\n"},
    "features": {"f0.txt": b"HELLO\n0", "f1.txt": b"HELLO\n1", "sub/deep.txt": b"deep HELLO\n"},
    "features/f1.txt": {"": b"HELLO\n1"},
    "features/sub": {"deep.txt": b"deep HELLO\n"},
    "data/raw.txt": {"": b"hello\n"},
    "images": {"a.txt": b"a1\n", "nested/b.txt": b"b1\n"},
    "images/nested/b.txt": {"": b"b1\n"},
}


def build(project: Project) -> None:
    """Two commits: tag v1, then HEAD with every output and tracked path changed."""
    project.pipeline(PIPELINE)
    for n, raw in ((1, "hello"), (2, "world")):
        project.write("data/raw.txt", f"{raw}\n")
        project.write("images/a.txt", f"a{n}\n")
        project.write("images/nested/b.txt", f"b{n}\n")
        project.pivot("track", "data/raw.txt", "images")
        project.pivot("run")
        project.git("add", "-A")
        project.git("commit", "-q", "-m", f"v{n}")
        if n == 1:
            project.git("tag", "v1")


def read_tree(path: Path) -> dict[str, bytes]:
    """A file as {"": bytes}; a folder as {relative path: bytes}."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def clone(project: Project, tmp_path: Path) -> Project:
    dest = tmp_path / f"clone-{uuid.uuid4().hex[:6]}"
    subprocess.run(["git", "clone", "-q", str(project.root), str(dest)], check=True)
    return Project(dest)


def without_cache(tree: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in tree.items() if not k.startswith(".pivot/cache")}


@pytest.fixture
def built(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Project:
    """A copy of the two-commit project (built once per session)."""
    return cloned("get-built", build, tmp_path_factory, tmp_path / "proj")


@pytest.fixture
def pushed(built: Project, tmp_path: Path) -> tuple[Project, Project]:
    """The built project pushed (every commit) to a folder remote, and a fresh clone of it."""
    built.pivot("remote", "add", "store", str(tmp_path / "remote"), "--default")
    built.pivot("push", "--all-commits")
    built.git("add", "-A")
    built.git("commit", "-q", "-m", "remote")
    return built, clone(built, tmp_path)


@pytest.mark.parametrize("path", sorted(V1))
def test_get_at_an_older_revision_from_the_local_cache(built: Project, tmp_path: Path, path: str) -> None:
    before = snapshot(built.root)
    dest = tmp_path / "out"
    out = built.pivot("get", path, "--rev", "v1", "-o", str(dest)).stdout
    assert read_tree(dest) == V1[path]
    assert "from the local cache" in out and path in out, out
    assert_same_tree(before, snapshot(built.root))  # workspace, locks, records and cache untouched
    assert os.access(next(p for p in [dest, *dest.rglob("*")] if p.is_file()), os.W_OK)  # a copy, not a link


def test_get_writes_copies_not_links_into_the_cache(built: Project, tmp_path: Path) -> None:
    built.write(".pivot/config.local.yaml", "cache:\n  link: hardlink\n")
    built.pivot("track", "images")  # the workspace's files become hardlinks to the cache objects
    assert (built.root / "images/a.txt").stat().st_nlink > 1
    built.pivot("get", "images/a.txt", "-o", str(tmp_path / "a.txt"))
    assert (tmp_path / "a.txt").stat().st_nlink == 1
    (tmp_path / "a.txt").write_text("edited\n")
    built.pivot("verify")  # the cache object (and the workspace's hardlink) still hold a2
    assert built.read("images/a.txt") == "a2\n"


def test_default_revision_is_head_and_default_destination_the_basename(built: Project) -> None:
    folder = built.root / "exports"
    folder.mkdir()
    built.pivot("get", "../clean.txt", cwd=folder)  # PATH is relative to the working folder, like DEST
    assert (folder / "clean.txt").read_bytes() == b"WORLD\n"
    (folder / "sub").mkdir()
    built.pivot("get", "../features/sub", "--rev", "v1", "-o", "sub/", cwd=folder)  # "DIR/": inside DIR
    assert read_tree(folder / "sub" / "sub") == V1["features/sub"]


def test_force_replaces_an_existing_destination_whole(built: Project, tmp_path: Path) -> None:
    outs = tmp_path / "outs"
    outs.mkdir()
    dest = outs / "features"
    dest.mkdir()
    (dest / "stale.txt").write_text("old\n")
    built.pivot("get", "features", "--rev", "v1", "-o", str(dest), "--force")
    assert read_tree(dest) == V1["features"]
    file = outs / "file"
    file.write_text("old\n")
    built.pivot("get", "features", "--rev", "v1", "-o", str(file), "--force")  # a file replaced by a folder
    assert read_tree(file) == V1["features"]
    assert sorted(p.name for p in outs.iterdir()) == ["features", "file"]  # no temporaries left


def test_a_metric_comes_from_git(project: Project, tmp_path: Path) -> None:
    project.pipeline("""\
from pivot import stage
from pivot.outputs import Metric

@stage(outs=[Metric("m.json")])
def score():
    open("m.json", "w").write('{"acc": 1}')
""")
    project.pivot("run")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "metric")
    out = project.pivot("get", "m.json", "-o", str(tmp_path / "m.json")).stdout
    assert (tmp_path / "m.json").read_text() == '{"acc": 1}' and "from git" in out


@pytest.mark.parametrize("path", ["features", "features/f1.txt", "features/sub", "data/raw.txt", "images",
                                  "images/nested/b.txt"])
def test_fresh_clone_gets_an_older_revision_from_a_folder_remote(pushed: tuple[Project, Project],
                                                                 tmp_path: Path, path: str) -> None:
    _, fresh = pushed
    before = snapshot(fresh.root)
    dest = tmp_path / "out"
    out = fresh.pivot("get", path, "--rev", "v1", "-o", str(dest)).stdout
    assert read_tree(dest) == V1[path]
    assert "from remote 'store'" in out, out
    assert_same_tree(without_cache(before), without_cache(snapshot(fresh.root)))
    assert not fresh.exists("clean.txt") and not fresh.exists("features")  # nothing checked out
    # The objects stay in the local cache (as after 'pivot fetch'): the next get needs no remote.
    again = fresh.pivot("get", path, "--rev", "v1", "-o", str(tmp_path / "again")).stdout
    assert "from the local cache" in again and read_tree(tmp_path / "again") == V1[path]


def test_a_file_inside_a_directory_fetches_only_its_manifest_and_itself(pushed: tuple[Project, Project],
                                                                        tmp_path: Path) -> None:
    _, fresh = pushed
    got = json.loads(fresh.pivot("get", "features/f1.txt", "--rev", "v1", "-o", str(tmp_path / "f1"),
                                 "--json").stdout)
    assert got["fetched"] == 2 and got["remote"] == "store" and got["owner"] == "stage 'featurize'"
    assert len(fresh.cache_objects()) == 2


def test_a_damaged_cache_object_is_fetched_again(pushed: tuple[Project, Project], tmp_path: Path) -> None:
    _, fresh = pushed
    fresh.pivot("get", "clean.txt", "--rev", "v1", "-o", str(tmp_path / "first"))
    [obj] = fresh.cache_objects()
    obj.chmod(0o644)
    obj.write_bytes(b"DAMAGED\n")
    fresh.pivot("get", "clean.txt", "--rev", "v1", "-o", str(tmp_path / "second"))
    assert (tmp_path / "second").read_bytes() == b"HELLO\n"


def test_get_from_seaweedfs(built: Project, tmp_path: Path, s3_prefix: str, seaweed: SeaweedServer) -> None:
    built.pivot("remote", "add", "s3", s3_prefix, "--default", "-o", f"endpoint_url={seaweed.endpoint}")
    built.pivot("push", "--all-commits")
    built.git("add", "-A")
    built.git("commit", "-q", "-m", "remote")
    fresh = clone(built, tmp_path)
    out = fresh.pivot("get", "features", "--rev", "v1", "-o", str(tmp_path / "f")).stdout
    assert read_tree(tmp_path / "f") == V1["features"] and "from remote 's3'" in out


# -- refusals: one line, exit 1, nothing written ------------------------------------------------------


def test_refusals(built: Project, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    refused(built, "get", "clean.txt", "--rev", "nope", "-o", out, names=("unknown git revision 'nope'",))
    line = refused(built, "get", "clean.text", "-o", out, names=("'clean.text'", "not a stage output or tracked"))
    assert "did you mean 'clean.txt'" in line
    refused(built, "get", "pipeline.py", "-o", out, names=("not a stage output",))
    refused(built, "get", "features/f9.txt", "--rev", "v1", "-o", out,
            names=("'features/f9.txt' is not in directory 'features'", "f0.txt"))
    refused(built, "get", "images/zz", "-o", out, names=("not in directory 'images'", "tracked data"))
    refused(built, "get", "../elsewhere", "-o", out, names=("outside the project",))
    refused(built, "get", "clean.txt", "-o", str(tmp_path / "no" / "such" / "x"), names=("does not exist",))
    (tmp_path / "taken").write_text("mine\n")
    refused(built, "get", "clean.txt", "-o", str(tmp_path / "taken"), names=("'", "taken", "already exists",
                                                                             "--force"))
    assert (tmp_path / "taken").read_text() == "mine\n"
    # The workspace's own outputs and tracked data are never a destination, even with --force.
    refused(built, "get", "clean.txt", "--rev", "v1", names=("workspace's 'clean.txt'", "-o"))
    refused(built, "get", "images/a.txt", "--rev", "v1", "-o", "images/a.txt", "--force",
            names=("workspace's 'images'",))
    refused(built, "get", "clean.txt", "-o", ".pivot/x", names=("Pivot or git owns",))
    assert not (tmp_path / "out").exists()


def test_object_nowhere_names_the_remote_asked_and_pivot_push(built: Project, tmp_path: Path) -> None:
    (tmp_path / "empty-remote").mkdir()
    built.pivot("remote", "add", "store", str(tmp_path / "empty-remote"), "--default")
    built.git("add", "-A")
    built.git("commit", "-q", "-m", "remote, never pushed")
    fresh = clone(built, tmp_path)
    out = tmp_path / "out"
    refused(fresh, "get", "features", "--rev", "v1", "-o", str(out),
            names=("'features' at v1", "neither in the local cache nor on remote 'store'", "pivot push"))
    refused(fresh, "get", "clean.txt", "-o", str(out), names=("remote 'store'", "pivot push"))
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".pivot-get" in p.name]


def test_object_not_cached_and_no_remote(built: Project, tmp_path: Path) -> None:
    fresh = clone(built, tmp_path)
    refused(fresh, "get", "clean.txt", "-o", str(tmp_path / "out"),
            names=("not in the local cache and no remote is configured", "pivot remote add", "pivot push"))


# -- remotes of config.local.yaml apply at every commit -------------------------------------------------


def test_old_commit_without_the_remote_pulls_through_config_local(built: Project, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    built.pivot("remote", "add", "store", str(remote), "--default")  # committed only after v1
    built.pivot("push", "--all-commits")
    built.git("add", "-A")
    built.git("commit", "-q", "-m", "remote")
    fresh = clone(built, tmp_path)
    fresh.git("checkout", "-q", "v1")
    assert "store" not in fresh.read(".pivot/config.yaml")
    line = refused(fresh, "pull", "-r", "store", names=("unknown remote 'store' at this commit",
                                                        "pivot remote add store URL --local"))
    assert "known here: none" in line
    refused(fresh, "pull", names=("no remote is configured", "--local"))
    fresh.pivot("remote", "add", "store", str(remote), "--local")
    fresh.pivot("pull")
    assert fresh.read("clean.txt") == "HELLO\n" and read_tree(fresh.root / "images") == V1["images"]
    assert fresh.git("status", "--porcelain") == ""  # config.local.yaml is not committed
    fresh.git("checkout", "-q", "main")  # both files name 'store': merged, still usable
    fresh.pivot("pull", "-r", "store")
    assert fresh.read("clean.txt") == "WORLD\n"


def test_unknown_remote_lists_the_known_ones(built: Project, tmp_path: Path) -> None:
    built.pivot("remote", "add", "one", str(tmp_path / "one"))
    built.pivot("remote", "add", "two", str(tmp_path / "two"), "--local")
    refused(built, "pull", "-r", "three", names=("unknown remote 'three'", "known here: one, two",
                                                 "pivot remote add three URL --local"))
    # get asks a remote only for what the cache lacks: with everything cached, -r is not consulted.
    built.pivot("get", "clean.txt", "--rev", "v1", "-r", "three", "-o", str(tmp_path / "x"))
    shutil.rmtree(built.root / ".pivot" / "cache")
    refused(built, "get", "clean.txt", "--rev", "v1", "-r", "three", "-o", str(tmp_path / "y"),
            names=("unknown remote 'three'",))


def test_a_hostile_manifest_writes_nothing_outside_dest(built: Project, tmp_path: Path) -> None:
    import xxhash

    data = json.dumps([{"hash": "0" * 32, "path": "../../escaped.txt", "size": 1}]).encode()
    digest = xxhash.xxh3_128_hexdigest(data)
    obj = built.root / ".pivot/cache/files" / digest[:2] / digest[2:]
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(data)
    lock = built.lock("featurize")
    old = yaml.safe_load(lock)["outs"][0]["hash"]
    built.write(".pivot/stages/featurize.lock", lock.replace(old, digest))
    built.git("commit", "-q", "-am", "hostile")
    (tmp_path / "outs").mkdir()
    refused(built, "get", "features", "-o", str(tmp_path / "outs" / "f"), names=("not a safe relative path",))
    assert not (tmp_path / "escaped.txt").exists() and list((tmp_path / "outs").iterdir()) == []
