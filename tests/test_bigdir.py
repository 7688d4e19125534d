"""The folder memo (pivot/hashing.py): an unchanged folder is one walk and one lookup, a changed
one re-reads only what changed. Every way a folder can change behind the memo's back must still
be seen, and the hash must stay the one of hashing every file (a tracked folder's record holds it).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import xxhash
from conftest import Project
from hypothesis import given, settings
from hypothesis import strategies as st

from pivot.hashing import changed_entries, manifest_bytes
from pivot.records import DirEntry

OLD = time.time_ns() - 3600 * 10**9  # an hour ago: a memo taken now trusts these mtimes
FUTURE = time.time_ns() + 3600 * 10**9  # never trusted: as if written within the same tick


def reference_hash(folder: Path) -> str:
    """The folder's hash as the original code computed it: every file hashed, json.dumps."""
    rows = []
    for dirpath, _dirs, files in os.walk(folder, followlinks=True):
        for name in files:
            full = Path(dirpath) / name
            rows.append({"hash": xxhash.xxh3_128_hexdigest(full.read_bytes()),
                         "path": full.relative_to(folder).as_posix(), "size": full.stat().st_size})
    rows.sort(key=lambda r: r["path"])
    return xxhash.xxh3_128_hexdigest(json.dumps(rows, sort_keys=True, separators=(",", ":")).encode())


def set_mtimes(folder: Path, ns: int) -> None:
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            os.utime(Path(dirpath) / name, ns=(ns, ns))


def tracked_folder(project: Project, files: int = 6, mtime: int = OLD) -> Path:
    """`data/` of `files` files in two subfolders and one alone in a third, tracked, and its memo
    taken by a status."""
    project.pipeline("from pivot import stage\n")
    for i in range(files):
        project.write(f"data/{i % 2}/f{i:05d}.txt", f"file {i:05d}\n")
    project.write("data/solo/only.txt", "alone\n")  # renamed, it still comes first in a walk
    set_mtimes(project.root / "data", mtime)
    project.pivot("track", "data")
    assert clean(project)  # remembers the folder
    assert f"hash: {reference_hash(project.root / 'data')}" in project.read(".pivot/tracked/data.yaml")
    return project.root / "data"


def clean(project: Project) -> bool:
    return "modified" not in project.pivot("status").stdout


def replace_keeping_stat(path: Path, content: bytes, same_inode: bool) -> None:
    """Give `path` new content of the same size and the same mtime, in place or as a new file."""
    before = path.stat()
    assert len(content) == before.st_size
    if same_inode:
        path.write_bytes(content)
    else:
        tmp = path.with_name(path.name + ".new")
        tmp.write_bytes(content)
        os.replace(tmp, path)
    os.utime(path, ns=(before.st_mtime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert (after.st_ino == before.st_ino) == same_inode


def test_unchanged_folder_is_clean_and_an_empty_subfolder_changes_nothing(project: Project) -> None:
    """As before the memo: a folder's hash is that of its files; empty folders are not in it."""
    data = tracked_folder(project)
    assert clean(project)
    assert "unchanged: data" in project.pivot("track", "data").stdout  # the remembered manifest
    (data / "empty").mkdir()
    assert clean(project)
    assert "unchanged: data" in project.pivot("track", "data").stdout


def test_new_inode_with_same_size_and_mtime_is_seen(project: Project) -> None:
    data = tracked_folder(project)
    replace_keeping_stat(data / "1/f00003.txt", b"FILE 00003\n", same_inode=False)
    assert not clean(project)
    project.pivot("track", "data")
    assert f"hash: {reference_hash(data)}" in project.read(".pivot/tracked/data.yaml")


def test_racy_edit_in_place_with_same_size_and_mtime_is_seen(project: Project) -> None:
    """Files whose mtime is not older than the memo by the timestamp granularity are re-read,
    though their row matches: a second write within the same tick leaves the same stat."""
    data = tracked_folder(project, mtime=FUTURE)
    assert clean(project)
    replace_keeping_stat(data / "0/f00002.txt", b"FILE 00002\n", same_inode=True)
    assert not clean(project)


def test_edit_in_place_with_same_size_and_mtime_set_back_is_seen(project: Project) -> None:
    """Not racy: the mtime is an hour old, and set back to it after the edit (`cp -p`, `touch
    -d`, rsync -t): only the ctime, which no one can set back, differs from the memo's walk."""
    data = tracked_folder(project)
    time.sleep(2.1)  # past the racy window of the ctimes set_mtimes left: only the walk's key sees it
    assert clean(project)
    replace_keeping_stat(data / "0/f00002.txt", b"FILE 00002\n", same_inode=True)
    assert not clean(project)
    project.pivot("track", "data")
    assert f"hash: {reference_hash(data)}" in project.read(".pivot/tracked/data.yaml")
    assert clean(project)


def test_added_removed_and_renamed_files_are_seen(project: Project) -> None:
    data = tracked_folder(project)
    (data / "solo/only.txt").rename(data / "solo/other.txt")  # same inode, size and mtime
    assert not clean(project)
    (data / "solo/other.txt").rename(data / "solo/only.txt")
    assert clean(project)
    (data / "1/f00001.txt").unlink()
    assert not clean(project)
    project.write("data/1/f00001.txt", "file 00001\n")
    assert clean(project)  # the same content again
    project.write("data/2/new.txt", "new\n")
    assert not clean(project)


def test_a_symlink_is_followed_and_its_new_target_seen(project: Project) -> None:
    data = tracked_folder(project)
    project.write("a.txt", "same size A\n")
    project.write("b.txt", "same size B\n")
    for name in ("a.txt", "b.txt"):
        os.utime(project.root / name, ns=(OLD, OLD))
    (data / "link.txt").symlink_to("../a.txt")
    project.pivot("track", "data")
    assert clean(project)
    (data / "link.txt").unlink()
    (data / "link.txt").symlink_to("../b.txt")  # same size and mtime behind the link
    assert not clean(project)
    project.pivot("track", "data")
    assert f"hash: {reference_hash(data)}" in project.read(".pivot/tracked/data.yaml")


def test_one_change_among_thousands_gives_the_full_hash(project: Project) -> None:
    """2,100 files are three remembered chunks: one changed file re-reads one chunk, and the
    result is still the hash of hashing every file."""
    data = tracked_folder(project, files=2100)
    path = data / "1/f01101.txt"
    path.write_text("changed\n")
    os.utime(path, ns=(OLD, OLD))
    assert not clean(project)
    project.pivot("track", "data")
    assert f"hash: {reference_hash(data)}" in project.read(".pivot/tracked/data.yaml")
    assert clean(project)
    (data / "0/f00000.txt").unlink()  # the chunks' boundaries all move
    project.write("data/0/zzz.txt", "last\n")
    assert not clean(project)
    project.pivot("track", "data")
    assert f"hash: {reference_hash(data)}" in project.read(".pivot/tracked/data.yaml")


def test_a_damaged_folder_memo_is_not_believed(project: Project) -> None:
    data = tracked_folder(project, files=2100)
    with sqlite3.connect(project.root / ".pivot/state.db") as db:  # 3 walk chunks, 3 manifest parts
        assert db.execute("SELECT kind, count(*) FROM folder_parts GROUP BY kind").fetchall() == [("text", 3),
                                                                                                ("walk", 3)]
        db.execute("UPDATE folder_parts SET data = X'00' WHERE kind = 'text' AND idx = 1")
    assert "unchanged: data" in project.pivot("track", "data").stdout  # its manifest, rebuilt
    (data / "0/f00000.txt").write_text("FILE 00000\n")
    with sqlite3.connect(project.root / ".pivot/state.db") as db:
        db.execute("UPDATE folder_parts SET data = X'00'")
        db.execute("UPDATE folders SET parts = X'02'")
    assert not clean(project)
    project.pivot("track", "data")
    assert f"hash: {reference_hash(data)}" in project.read(".pivot/tracked/data.yaml")
    assert clean(project)


def test_a_modified_directory_output_is_restored(project: Project) -> None:
    project.pipeline('''
        from pivot import stage

        @stage(outs=["out"])
        def make():
            import os
            os.makedirs("out/sub", exist_ok=True)
            for i in range(20):
                open(f"out/sub/{i}.txt", "w").write(f"{i}\\n")
    ''')
    project.pivot("run")
    set_mtimes(project.root / "out", OLD)
    assert "up to date" in project.pivot("status").stdout
    (project.root / "out/sub/7.txt").chmod(0o644)
    (project.root / "out/sub/7.txt").write_text("seven\n")
    assert "will be restored from the cache" in project.pivot("status").stdout
    project.pivot("checkout", "--force")
    assert project.read("out/sub/7.txt") == "7\n"
    assert "will be restored" not in project.pivot("status").stdout


def test_a_directory_output_edited_to_the_same_size_and_mtime_is_restored(project: Project) -> None:
    project.pipeline('''
        from pivot import stage

        @stage(outs=["out"])
        def make():
            import os
            os.makedirs("out/sub", exist_ok=True)
            for i in range(20):
                open(f"out/sub/{i}.txt", "w").write(f"{i:02d}\\n")
    ''')
    project.pivot("run")
    set_mtimes(project.root / "out", OLD)
    time.sleep(2.1)  # past the racy window of the ctimes set_mtimes left
    assert "up to date" in project.pivot("status").stdout
    path = project.root / "out/sub/7.txt"
    path.chmod(0o644)
    replace_keeping_stat(path, b"xx\n", same_inode=True)
    assert "will be restored from the cache" in project.pivot("status").stdout
    project.pivot("run")
    assert project.read("out/sub/7.txt") == "07\n"
    assert "will be restored" not in project.pivot("status").stdout


# -- the manifest, written fast, must be the bytes json.dumps writes --------------------

paths = st.lists(st.characters(blacklist_categories=("Cs",)) | st.sampled_from(['"', "\\", "},{", "\x00", "\udcff"]),
                 min_size=1, max_size=8).map("".join)


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(paths, st.tuples(st.text("0123456789abcdef", min_size=32, max_size=32),
                                        st.integers(0, 2**40)), max_size=8))
def test_manifest_bytes_is_json_dumps(files: dict[str, tuple[str, int]]) -> None:
    entries = [DirEntry(p, h, n) for p, (h, n) in files.items()]
    rows = [{"hash": e.hash, "path": e.path, "size": e.size} for e in sorted(entries, key=lambda e: e.path)]
    assert manifest_bytes(entries) == json.dumps(rows, sort_keys=True, separators=(",", ":")).encode()


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(paths, st.sampled_from(["a" * 32, "b" * 32]), max_size=6),
       st.dictionaries(paths, st.sampled_from(["a" * 32, "b" * 32]), max_size=6))
def test_changed_entries_is_the_set_difference(one: dict[str, str], two: dict[str, str]) -> None:
    a = [DirEntry(p, h, 1) for p, h in one.items()]
    b = [DirEntry(p, h, 1) for p, h in two.items()]
    mine, theirs = changed_entries(manifest_bytes(a), manifest_bytes(b))
    assert sorted(mine) == sorted(set(a) - set(b)) and sorted(theirs) == sorted(set(b) - set(a))


def test_changed_entries_of_large_manifests() -> None:
    """Large manifests are compared region by region (about 64 KiB each, cut at common paths):
    the result is still the set difference, with changes, additions and removals anywhere."""
    import random

    rng = random.Random(7)
    base = {f"d{i % 7}/f{i:06d}.bin": (f"{rng.getrandbits(128):032x}", rng.randint(0, 9999)) for i in range(6000)}
    for trial in range(6):
        other = dict(base)
        for path in rng.sample(sorted(base), 3 * trial):
            if rng.random() < 0.5:
                other[path] = ("f" * 32, other[path][1] + 1)
            else:
                del other[path]
        for i in range(trial):
            other[f"d{i}/new}},{{{i}.bin"] = ("e" * 32, i)  # a path that holds the cut marker
        a = [DirEntry(p, h, n) for p, (h, n) in base.items()]
        b = [DirEntry(p, h, n) for p, (h, n) in other.items()]
        mine, theirs = changed_entries(manifest_bytes(a), manifest_bytes(b))
        assert sorted(mine) == sorted(set(a) - set(b)) and sorted(theirs) == sorted(set(b) - set(a))


# -- the cache memo: "every object of this manifest is in the cache" ---------------------------

TWENTY = '''
    from pivot import stage

    @stage(outs=["out"])
    def make():
        import os
        os.makedirs("out/sub", exist_ok=True)
        for i in range(20):
            open(f"out/sub/{i}.txt", "w").write(f"{i:02d}\\n")
'''


def cache_memos(project: Project) -> list[str]:
    with sqlite3.connect(project.root / ".pivot/state.db") as db:
        return [k for (k,) in db.execute("SELECT key FROM kv WHERE key LIKE 'cache-complete:%'")]


def object_of(project: Project, content: bytes) -> Path:
    digest = xxhash.xxh3_128_hexdigest(content)
    return project.root / ".pivot/cache/files" / digest[:2] / digest[2:]


def test_an_object_removed_after_the_cache_memo_was_taken_is_seen(project: Project) -> None:
    """A changed folder output is restorable while the cache holds all of its locked version;
    that is remembered by the stat of the cache folders, so removing one object (as gc, a
    damaged-object eviction or a user would) must still make the stage stale, every time."""
    project.pipeline(TWENTY)
    project.pivot("run")
    time.sleep(2.1)  # the cache folders are past the racy window: the next status remembers them
    assert "all 1 stage(s) up to date" in project.pivot("status").stdout  # re-reads the run's racy files
    assert cache_memos(project) == ["cache-complete:out"]  # and so takes the memo before any edit
    path = project.root / "out/sub/7.txt"
    path.chmod(0o644)
    path.write_text("seven\n")
    assert "out will be restored from the cache" in project.pivot("status").stdout  # from the memo
    object_of(project, b"03\n").unlink()
    for _ in range(2):  # and the memo is not taken again while an object is missing
        out = project.pivot("status").stdout
        assert "stale (output 'out' was modified and its locked version is not in the cache)" in out, out
    project.pivot("run")
    assert project.read("out/sub/3.txt") == "03\n" and project.read("out/sub/7.txt") == "07\n"


def test_a_tracked_folder_whose_object_was_removed_needs_a_pull(project: Project) -> None:
    data = tracked_folder(project)
    time.sleep(2.1)
    shutil.rmtree(data)
    assert "run 'pivot checkout' to restore it" in project.pivot("status").stdout
    assert cache_memos(project) == ["cache-complete:data"]
    assert "run 'pivot checkout' to restore it" in project.pivot("status").stdout
    object_of(project, b"file 00003\n").unlink()
    assert "run 'pivot pull' to fetch it" in project.pivot("status").stdout
    assert "run 'pivot pull' to fetch it" in project.pivot("status").stdout
