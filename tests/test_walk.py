"""The walk of a large folder in parts (pivot/walk.py): forked processes each stat a run of whole
chunks, and the result must be exactly that of one process walking it all (the rows, their
order, the chunks' signatures), so that every change in any part is still seen by a status.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Project
from test_bigdir import OLD, clean, reference_hash, replace_keeping_stat, set_mtimes

from pivot import walk

# Enough files for two parts of at least PART_MIN files each: a status forks one child for them.
FILES = 2 * walk.PART_MIN + 3 * walk.CHUNK // 2
TWO_CPUS = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 if hasattr(os, "sched_getaffinity") else True,
                              reason="the walk forks only with two CPUs or more (Linux)")


def make_tree(root: Path, files: int) -> None:
    """Files in nested folders (one empty, one reached through a symlink), and symlinks to files."""
    for i in range(files):
        sub = root / f"d{i % 3}" / ("deep" if i % 5 == 0 else "")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:05d}.txt").write_text(f"file {i}\n")
    (root / "empty" / "inner").mkdir(parents=True)
    outside = root.parent / f"outside-{root.name}"
    outside.mkdir()
    (outside / "x.txt").write_text("x\n")
    (root / "linked").symlink_to(outside)
    (root / "d1" / "to-file.txt").symlink_to("f00001.txt")


def reference_rows(root: Path) -> set[walk.Row]:
    found = set()
    for dirpath, _dirs, names in os.walk(root, followlinks=True):
        for name in names:
            st = os.stat(Path(dirpath) / name)
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            found.add((rel, st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode, st.st_ctime_ns))
    return found


def test_a_walk_in_parts_is_the_walk_in_one(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_tree(root, 5000)
    gc.disable()
    try:
        one = walk.scan(str(root), parts=1)
        rows = [r for chunk in one.chunks for r in chunk]
        assert set(rows) == reference_rows(root) and len(rows) == 5000 + 2
        assert one.parts == 1 and len(one.chunks) == 5
        for parts in (2, 3, 5, 9):
            other = walk.scan(str(root), parts=parts)
            assert other.parts == min(parts, 5)
            assert (list(other.chunks), other.sigs, other.tops) == (list(one.chunks), one.sigs, one.tops)
    finally:
        gc.enable()


@TWO_CPUS
@TWO_CPUS
def test_a_large_folder_is_walked_in_two_processes_and_a_small_one_in_this(tmp_path: Path) -> None:
    # In a fresh process, as `pivot status` walks: this test process may run other threads (a
    # fixture's server, say), and the walk never forks a process that does.
    root = tmp_path / "data"
    make_tree(root, FILES)
    small = tmp_path / "small"
    make_tree(small, 2 * walk.PART_MIN - 10)
    script = "import sys; from pivot import walk; print(*(walk.scan(p).parts for p in sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", script, str(root), str(small)], capture_output=True, text=True,
                          check=True, timeout=120)
    large, few = (int(n) for n in done.stdout.split())
    assert large >= 2 and few == 1, done.stdout


def test_a_dangling_symlink_in_a_part_fails_as_in_one(tmp_path: Path) -> None:
    """A child that fails is redone by the parent, which raises what the one-process walk raises."""
    root = tmp_path / "data"
    make_tree(root, 3000)
    (root / "d2" / "zz-dangling.txt").symlink_to("nowhere.txt")
    for parts in (1, 3):
        with pytest.raises(FileNotFoundError):
            walk.scan(str(root), parts=parts)


@TWO_CPUS
def tracked_large_folder(project: Project) -> Path:
    """`data`: FILES files in two subfolders, their mtimes set back to OLD, tracked."""
    data = project.root / "data"
    for i in range(FILES):
        (data / f"{i % 2}").mkdir(parents=True, exist_ok=True)
        (data / f"{i % 2}" / f"f{i:05d}.txt").write_text(f"file {i:05d}\n")
    set_mtimes(data, OLD)
    project.pivot("track", "data")
    return data


def test_changes_in_the_part_a_child_walks_are_seen(project: Project) -> None:
    """A tracked folder large enough to be walked in two processes: every kind of change to a file
    that the child stats (the last of the walk) is seen, and the hash stays that of every file."""
    project.pipeline("from pivot import stage\n")
    data = tracked_large_folder(project)
    time.sleep(2.1)  # past the racy window of the ctimes set_mtimes left: only the walk's key sees a change
    assert clean(project)
    last = walk.scan(str(data)).chunks[-1][-1][0]  # a file the child stat-ed
    target = data / last
    replace_keeping_stat(target, target.read_bytes().upper(), same_inode=True)  # mtime set back
    assert not clean(project)
    project.pivot("track", "data")
    assert f"hash: {reference_hash(data)}" in project.read(".pivot/tracked/data.yaml")
    assert clean(project)
    replace_keeping_stat(target, target.read_bytes().lower(), same_inode=False)  # a new inode
    assert not clean(project)
    project.pivot("track", "data")
    assert clean(project)
    target.rename(target.with_name("renamed.txt"))  # same inode, size and mtime
    assert not clean(project)
    target.with_name("renamed.txt").rename(target)
    assert clean(project)
    target.unlink()
    assert not clean(project)
    target.symlink_to(data / "0" / "f00000.txt")
    assert not clean(project)
    project.pivot("track", "data")
    assert f"hash: {reference_hash(data)}" in project.read(".pivot/tracked/data.yaml")
    assert clean(project)


# A walk ahead (`walk.ahead`, as `pivot status` starts one for each large folder it walked last
# time), in a fresh process: the pytest process may run other threads, and nothing forks then.
AHEAD = """
import gc, os, sys
from pivot import walk
gc.disable()
root, dangling, unused = sys.argv[1:]
one = walk.scan(root, parts=1)
with walk.ahead([root, dangling, unused]):
    early = walk.scan(root)
    assert early.early and early.files == one.files, (early.early, early.files, one.files)
    assert (list(early.chunks), early.sigs, early.tops) == (list(one.chunks), one.sigs, one.tops)
    target = os.path.join(root, one.chunks[-1][-1][0])  # stat-ed by the walk's child: same size and mtime
    before = os.stat(target)
    with open(target, "r+b") as f:
        f.write(b"F")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = walk.scan(root)  # a walk ahead is taken once: this one is made now, and sees the edit
    assert not again.early and again.sigs != early.sigs and again.sigs == walk.scan(root, parts=1).sigs
    try:
        walk.scan(dangling)
    except FileNotFoundError:
        print("raised")
try:  # the walk of `unused`, never taken, was stopped and its process reaped
    print("left", os.waitpid(-1, os.WNOHANG))
except ChildProcessError:
    print("none left")
with walk.ahead([root]):
    late, later = walk.scan(root), None
    with walk.ahead([root]):
        later = walk.scan(root)
# their walkers were stopped before any chunk was asked for: the chunks are walked again here
assert list(late.chunks) == list(walk.scan(root, parts=1).chunks)
os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns + 1))
try:  # and must be the chunks whose signatures the walk gave
    later.chunks[0]
except Exception as exc:
    print(type(exc).__name__, exc)
"""


@TWO_CPUS
def test_a_walk_ahead_is_the_walk_taken_once_a_failed_one_is_redone_an_unused_one_stopped(tmp_path: Path) -> None:
    root, dangling, unused = tmp_path / "data", tmp_path / "dangling", tmp_path / "unused"
    for folder in (root, dangling, unused):
        make_tree(folder, FILES)
    (dangling / "d2" / "zz-dangling.txt").symlink_to("nowhere.txt")  # in the part a child stats
    done = subprocess.run([sys.executable, "-c", AHEAD, str(root), str(dangling), str(unused)],
                          capture_output=True, text=True, timeout=120)
    lines = done.stdout.split("\n")
    assert done.returncode == 0 and lines[:2] == ["raised", "none left"], done.stdout + done.stderr
    assert lines[2] == f"StateError '{root}' changed while Pivot was reading it; run the command again"


@TWO_CPUS
def test_status_walks_ahead_the_large_folders_the_last_full_status_walked(project: Project) -> None:
    """`.pivot/tmp/walk-ahead` lists them: written by a status of the whole pipeline only, and a
    status walking a folder ahead still sees a same-size edit whose mtime was set back."""
    project.pipeline("from pivot import stage\n\n@stage(outs=['small.txt'])\ndef small():\n"
                     "    open('small.txt', 'w').write('s')\n")
    data = tracked_large_folder(project)
    hint = project.root / ".pivot" / "tmp" / "walk-ahead"
    assert not hint.exists()
    time.sleep(2.1)  # past the racy window of the ctimes set_mtimes left
    assert clean(project)
    assert hint.read_bytes() == b"data\0"
    target = data / walk.scan(str(data), parts=1).chunks[-1][-1][0]
    replace_keeping_stat(target, target.read_bytes().upper(), same_inode=True)
    project.pivot("status", "small")  # a status of one stage walks no folder, and leaves the list
    assert hint.read_bytes() == b"data\0"
    assert not clean(project)  # walked ahead (the list names it), the edit seen
    project.pivot("track", "data")
    assert f"hash: {reference_hash(data)}" in project.read(".pivot/tracked/data.yaml")
    for path in sorted(data.rglob("*.txt"))[walk.EARLY_MIN - 10:]:
        path.unlink()
    assert not clean(project)  # a folder walked ahead as large, now small
    assert hint.read_bytes() == b""
