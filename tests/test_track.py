"""pivot track / pivot untrack: data kept in the cache and recorded in .pivot/tracked/, moved by
push, fetch and pull, restored by checkout and the git hooks, kept by gc, checked by status and
verify, and usable as a stage's dependency."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from conftest import PIVOT, Project
from hypothesis import given, settings
from hypothesis import strategies as st
from test_errors import refused

from pivot import tracked as tracked_mod
from pivot import yamlio
from pivot.errors import TrackError, YamlProblem
from pivot.tracked import Tracked

EMPTY = "from pivot import stage\n"


def tracked_project(project: Project) -> Project:
    """A file and a folder tracked and committed."""
    project.pipeline(EMPTY)
    project.write("data/raw.csv", "a,b\n1,2\n")
    project.write("images/one.txt", "one\n")
    project.write("images/sub/two.txt", "two\n")
    project.pivot("track", "data/raw.csv", "images")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "tracked")
    return project


def tree(root: Path, rel: str) -> dict[str, bytes]:
    base = root / rel
    if base.is_file():
        return {rel: base.read_bytes()}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def test_track_writes_records_caches_the_data_and_ignores_the_paths(project: Project) -> None:
    tracked_project(project)
    records = sorted(p.name for p in (project.root / ".pivot/tracked").iterdir())
    assert records == ["data%2Fraw.csv.yaml", "images.yaml"]
    folder = project.read(".pivot/tracked/images.yaml")
    assert "dir: true" in folder and "files: 2" in folder and "path: images" in folder and "size: 8" in folder
    gitignore = project.read(".gitignore")
    assert "/data/raw.csv\n" in gitignore and "/images\n" in gitignore
    assert project.git("ls-files", "data", "images") == ""  # git does not hold the data
    assert len(project.cache_objects()) == 4  # the file, the folder's two files and its manifest
    assert ".pivot/tracked/images.yaml" in project.git("ls-files")


def test_push_clone_pull_gives_byte_identical_data(project: Project, tmp_path: Path) -> None:
    tracked_project(project)
    remote = tmp_path / "store"
    project.pivot("remote", "add", "store", str(remote), "--default")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "remote")
    pushed = project.pivot("push").stdout
    assert "4" in pushed, pushed
    clone = Project(tmp_path / "clone")
    subprocess.run(["git", "clone", "-q", str(project.root), str(clone.root)], check=True)
    assert not clone.exists("data/raw.csv") and not clone.exists("images")
    clone.pivot("pull")
    for rel in ("data/raw.csv", "images"):
        assert tree(clone.root, rel) == tree(project.root, rel)
    assert "modified" not in clone.pivot("status").stdout


def test_fetch_then_checkout_restores_tracked_data(project: Project, tmp_path: Path) -> None:
    tracked_project(project)
    project.pivot("remote", "add", "store", str(tmp_path / "store"), "--default")
    project.git("commit", "-qam", "remote")
    project.pivot("push")
    clone = Project(tmp_path / "clone")
    subprocess.run(["git", "clone", "-q", str(project.root), str(clone.root)], check=True)
    clone.pivot("fetch")
    assert not clone.exists("images")
    assert "restored images" in clone.pivot("checkout").stdout
    assert tree(clone.root, "images") == tree(project.root, "images")


def test_modified_tracked_file_is_reported_then_recorded(project: Project) -> None:
    tracked_project(project)
    assert "modified" not in project.pivot("status").stdout
    project.write("data/raw.csv", "a,b\n3,4\n")
    out = project.pivot("status").stdout
    assert "data/raw.csv: modified: run 'pivot track data/raw.csv' to record it" in out
    entries = json.loads(project.pivot("status", "--json").stdout)
    assert {"tracked": "data/raw.csv", "state": "modified"}.items() <= entries[-1].items()
    before = project.read(".pivot/tracked/data%2Fraw.csv.yaml")
    assert "recorded a new version of data/raw.csv" in project.pivot("track", "data/raw.csv").stdout
    assert project.read(".pivot/tracked/data%2Fraw.csv.yaml") != before
    assert "modified" not in project.pivot("status").stdout
    assert "unchanged" in project.pivot("track", "data/raw.csv").stdout


def test_verify_fails_on_modified_tracked_data(project: Project) -> None:
    tracked_project(project)
    project.pivot("verify")
    project.write("images/sub/two.txt", "changed\n")
    proc = project.pivot("verify", check=False)
    assert proc.returncode == 1
    assert "images: tracked data differs from its record" in proc.stdout
    assert "pivot track images" in proc.stdout
    report = json.loads(project.pivot("verify", "--json", check=False).stdout)
    assert not report["ok"] and report["tracked"][0]["path"] == "images"


def test_untrack_keeps_the_data_and_drops_record_and_ignore_entry(project: Project) -> None:
    tracked_project(project)
    data = tree(project.root, "images")
    project.pivot("untrack", "images")
    assert tree(project.root, "images") == data
    assert not project.exists(".pivot/tracked/images.yaml")
    gitignore = project.read(".gitignore")
    assert "/images\n" not in gitignore and "/data/raw.csv\n" in gitignore
    refused(project, "untrack", "images", names=("images", "not tracked"))


def test_untrack_with_symlinks_leaves_ordinary_files(project: Project) -> None:
    config = project.read(".pivot/config.yaml")
    assert "link: auto" in config
    project.write(".pivot/config.yaml", config.replace("link: auto", "link: symlink"))
    project.pipeline(EMPTY)
    project.write("big/a.bin", "A" * 100)
    project.pivot("track", "big")
    assert os.path.islink(project.root / "big/a.bin")
    project.pivot("untrack", "big")
    assert not os.path.islink(project.root / "big/a.bin")
    assert project.read("big/a.bin") == "A" * 100


def test_refusals_change_nothing(project: Project, tmp_path: Path) -> None:
    project.pipeline("""\
        from pivot import stage

        @stage(deps=["in.txt"], outs=["results/out.txt"])
        def copy():
            import os
            os.makedirs("results", exist_ok=True)
            open("results/out.txt", "w").write(open("in.txt").read())
        """)
    project.write("in.txt", "x\n")
    project.pivot("run")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "run")
    (tmp_path / "outside.txt").write_text("out\n")
    os.symlink(tmp_path, project.root / "elsewhere")
    project.write("data/d.txt", "d\n")
    refused(project, "track", "results/out.txt", names=("results/out.txt", "stage 'copy'"))
    refused(project, "track", "results", names=("results", "stage 'copy'"))
    refused(project, "track", str(tmp_path / "outside.txt"), names=("outside the project",))
    refused(project, "track", "../outside.txt", names=("outside the project",))
    refused(project, "track", "elsewhere/outside.txt", names=("elsewhere", "leads outside the project"))
    refused(project, "track", ".pivot/config.yaml", names=(".pivot/",))
    refused(project, "track", "in.txt", names=("git already tracks 'in.txt'", "git rm -r --cached in.txt"))
    refused(project, "track", "nope.txt", names=("nope.txt", "does not exist"))
    refused(project, "track", "data/d.txt", "nope.txt", names=("nope.txt",))  # nothing tracked either
    project.pivot("track", "data")
    refused(project, "track", "data/d.txt", names=("inside tracked folder 'data'",))


COPY_IMAGE_A = """\
    from pivot import stage

    @stage(deps=["images/a.txt"], outs=["out.txt"])
    def copy():
        open("out.txt", "w").write(open("images/a.txt").read())
    """


def test_stage_depending_on_a_file_inside_a_tracked_folder_goes_stale(project: Project) -> None:
    project.write("images/a.txt", "a\n")
    project.write("images/b.txt", "b\n")
    project.pipeline(EMPTY)
    project.pivot("track", "images")
    project.pipeline(COPY_IMAGE_A)
    project.pivot("run")
    assert "up to date" in project.pivot("status").stdout
    project.write("images/a.txt", "changed\n")
    out = project.pivot("status").stdout
    assert "copy: stale" in out and "images: modified" in out


def test_missing_tracked_dependency_is_restorable_not_a_graph_error(project: Project) -> None:
    project.write("images/a.txt", "a\n")
    project.pipeline(EMPTY)
    project.pivot("track", "images")
    project.pipeline(COPY_IMAGE_A)
    project.pivot("run")
    (project.root / "images/a.txt").unlink()
    (project.root / "images").rmdir()
    assert "images: missing: run 'pivot checkout'" in project.pivot("status").stdout
    project.pivot("checkout")
    assert project.read("images/a.txt") == "a\n"


def test_gc_keeps_tracked_objects(project: Project) -> None:
    tracked_project(project)
    objects = set(project.cache_objects())
    subprocess.run([PIVOT, "gc", "--yes"], cwd=project.root, check=True, capture_output=True,
                   stdin=subprocess.DEVNULL)
    assert set(project.cache_objects()) == objects
    # an older version stays while a commit records it
    project.write("data/raw.csv", "new\n")
    project.pivot("track", "data/raw.csv")
    project.git("commit", "-qam", "new version")
    subprocess.run([PIVOT, "gc", "--yes"], cwd=project.root, check=True, capture_output=True,
                   stdin=subprocess.DEVNULL)
    assert objects <= set(project.cache_objects())


def test_git_checkout_hook_restores_the_recorded_version(project: Project) -> None:
    tracked_project(project)
    project.pivot("hooks", "install")
    old = project.read("data/raw.csv")
    project.git("checkout", "-q", "-b", "other")
    project.write("data/raw.csv", "other version\n")
    project.pivot("track", "data/raw.csv")
    project.git("commit", "-qam", "other version")
    project.git("checkout", "-q", "main")
    assert project.read("data/raw.csv") == old
    project.git("checkout", "-q", "other")
    assert project.read("data/raw.csv") == "other version\n"


def test_a_stage_may_not_produce_tracked_data(project: Project) -> None:
    tracked_project(project)
    project.pipeline("""\
        from pivot import stage

        @stage(outs=["images/new.txt"])
        def make():
            open("images/new.txt", "w").write("x")
        """)
    refused(project, "run", names=("images/new.txt", "tracked data 'images'", "pivot untrack images"))


def test_track_from_a_subfolder_takes_paths_relative_to_it(project: Project) -> None:
    project.pipeline(EMPTY)
    project.write("data/raw.csv", "x\n")
    project.pivot("track", "raw.csv", cwd=project.root / "data")
    assert project.exists(".pivot/tracked/data%2Fraw.csv.yaml")


def test_a_hostile_record_is_one_line_naming_it(project: Project) -> None:
    tracked_project(project)
    project.write(".pivot/tracked/images.yaml", "path: ../../etc\nhash: nothex\nsize: 1\n")
    refused(project, "status", names=(".pivot/tracked/images.yaml", "not a tracked-data record"))
    project.write(".pivot/tracked/images.yaml", "a: &a [*a, *a]\n: [\n")
    refused(project, "gc", "--dry-run", names=(".pivot/tracked/images.yaml",))


def test_status_rev_compares_tracked_data_with_the_records_at_rev(project: Project) -> None:
    tracked_project(project)
    out = project.pivot("status", "--rev", "HEAD").stdout
    assert "differ" not in out.replace("match", ""), out
    project.write("data/raw.csv", "a,b\n3,4\n")
    project.pivot("track", "data/raw.csv")
    project.write("new.txt", "new\n")
    project.pivot("track", "new.txt")
    out = project.pivot("status", "--rev", "HEAD").stdout
    assert "data/raw.csv: tracked data differs from HEAD (content differs from its record at HEAD)" in out, out
    assert "new.txt: tracked data differs from HEAD (not tracked at HEAD)" in out
    assert "images" not in out and "2 of 3 tracked path(s) differ from HEAD" in out
    assert "images: tracked data same as HEAD" in project.pivot("status", "--rev", "HEAD", "--explain").stdout
    project.pivot("untrack", "images")
    report = json.loads(project.pivot("status", "--rev", "HEAD", "--json").stdout)
    assert {t["path"]: t["reason"] for t in report["tracked"] if t["differs"]}["images"] == \
        "tracked at HEAD, not tracked now"
    # Data missing here is compared through its record (a fresh clone has not pulled it).
    project.pivot("track", "images")
    (project.root / "data/raw.csv").unlink()
    out = project.pivot("status", "--rev", "HEAD").stdout
    assert "data/raw.csv: tracked data differs" in out and "images:" not in out


def test_verify_staged_checks_tracked_data_and_records(project: Project) -> None:
    tracked_project(project)
    project.pivot("verify", "--staged")
    project.write("images/sub/two.txt", "changed\n")
    proc = project.pivot("verify", "--staged", check=False)
    assert "images: tracked data differs from its record" in proc.stdout and "pivot track images" in proc.stdout
    project.pivot("track", "images")  # recorded, but the record is not staged
    proc = project.pivot("verify", "--staged", check=False)
    assert ".pivot/tracked/images.yaml: tracked-data record differs from its staged version" in proc.stdout
    assert "git add .pivot/tracked/images.yaml" in proc.stdout
    assert "tracked data differs" not in proc.stdout, proc.stdout  # only the 'git add' is missing
    project.git("add", "-A")
    project.pivot("verify", "--staged")
    project.write("new.txt", "new\n")
    project.pivot("track", "new.txt")
    proc = project.pivot("verify", "--staged", check=False)
    assert ".pivot/tracked/new.txt.yaml: tracked-data record is not staged" in proc.stdout, proc.stdout
    project.git("add", "-A")
    project.pivot("untrack", "data/raw.csv")
    proc = project.pivot("verify", "--staged", check=False)
    assert "raw.csv.yaml: tracked-data record deleted in the workspace but still staged" in proc.stdout
    project.git("add", "-A")
    project.pivot("verify", "--staged")


def test_verify_fails_on_tracked_data_the_cache_lacks(project: Project) -> None:
    tracked_project(project)
    for obj in project.cache_objects():
        obj.chmod(0o644)
        obj.unlink()
    shutil.rmtree(project.root / "images")  # missing data stays restorable, not a failure
    proc = project.pivot("verify", check=False)
    assert "data/raw.csv: tracked data matches its record but is not in the cache" in proc.stdout, proc.stdout
    assert "fix: pivot track data/raw.csv" in proc.stdout and "images:" not in proc.stdout
    assert project.pivot("verify", "--staged", check=False).returncode == 1
    project.pivot("track", "data/raw.csv")
    project.pivot("verify")


# `pivot track` run in a child process whose Cache.add_file (one copy of a workspace file into the
# cache) counts its calls and prints the count last on stderr.
COUNT_COPIES = """\
import atexit, sys
from pivot import cache
from pivot.cli.main import main
calls = []
real = cache.Cache.add_file
def add_file(self, src):
    calls.append(str(src))
    return real(self, src)
cache.Cache.add_file = add_file
atexit.register(lambda: print(f"copies={len(calls)}", file=sys.stderr))
sys.exit(main(sys.argv[1:]))
"""


def track_counting_copies(project: Project, *args: str) -> tuple[str, int]:
    proc = subprocess.run([str(Path(PIVOT).parent / "python"), "-c", COUNT_COPIES, "track", *args],
                          cwd=project.root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, int(proc.stderr.strip().rsplit("copies=", 1)[1])


def test_retracking_a_folder_copies_only_the_files_the_cache_lacks(project: Project) -> None:
    project.pipeline(EMPTY)
    for i in range(30):
        project.write(f"images/{i % 3}/f{i}.txt", f"file {i}\n")
    out, copies = track_counting_copies(project, "images")
    assert "tracked images" in out and copies == 30  # the first time, every file
    project.write("images/1/f4.txt", "changed\n")
    out, copies = track_counting_copies(project, "images")
    assert "recorded a new version of images" in out and copies == 1  # the changed file only
    assert "files: 30" in project.read(".pivot/tracked/images.yaml")
    assert "modified" not in project.pivot("status").stdout
    project.pivot("verify")  # the new version's objects are all in the cache
    shutil.rmtree(project.root / "images")
    project.pivot("checkout")
    assert project.read("images/1/f4.txt") == "changed\n" and project.read("images/2/f5.txt") == "file 5\n"
    out, copies = track_counting_copies(project, "images")
    assert "unchanged: images" in out and copies == 0
    # an object the cache lost is stored again, though its file did not change
    lost = next(p for p in project.cache_objects() if p.read_bytes() == b"file 7\n")
    lost.chmod(0o644)
    lost.unlink()
    out, copies = track_counting_copies(project, "images")
    assert "unchanged: images" in out and copies == 1 and lost.read_bytes() == b"file 7\n"


# -- records read without YAML: only where YAML would read the very same values ----------------

def read_as_yaml_does(text: str) -> Tracked | str:
    """What reading a record through PyYAML gives (the reference), or its error."""
    try:
        return Tracked.from_dict(yamlio.parse(text))
    except YamlProblem as exc:
        return f"yaml: {exc.problem}"
    except (KeyError, TypeError, ValueError) as exc:
        return f"shape: {exc}"


def read_as_pivot_does(text: str) -> Tracked | str:
    try:
        return tracked_mod.loads(text, "r.yaml")
    except TrackError as exc:
        return str(exc)


def agree(text: str) -> None:
    """Pivot reads `text` as PyYAML does: the same record, or an error for both."""
    ours, theirs = read_as_pivot_does(text), read_as_yaml_does(text)
    assert ours == theirs if isinstance(theirs, Tracked) else isinstance(ours, str), (text, ours, theirs)


HASH = "d74db35a6163a75ce9676448202bdb51"


def test_records_yaml_reads_otherwise_are_not_read_without_it() -> None:
    """Texts that look like what `pivot track` writes, but where YAML reads a value as a
    boolean, null, number or quoted string, a key twice, or another shape."""
    base = f"dir: true\nfiles: 3\nhash: {HASH}\npath: data\nschema: 1\nsize: 10\n"
    for old, new in [("path: data", "path: yes"), ("path: data", "path: 'yes'"), ("path: data", "path: null"),
                     ("path: data", "path: ON"), ("path: data", "path: 'data'"), ("path: data", "path: a/../b"),
                     ("path: data", "path: .inf"), ("path: data", "path: 1e3"), ("path: data", "path: 2024-01-01"),
                     (f"hash: {HASH}", "hash: 12345678901234567890123456789012"),
                     (f"hash: {HASH}", "hash: 0b010101010101010101010101010101"),
                     ("size: 10", "size: 0o12"), ("size: 10", "size: 1_0"), ("size: 10", "size: -1"),
                     ("files: 3", "files: 03"), ("dir: true", "dir: True"), ("schema: 1", "schema: 1\npath: other"),
                     ("size: 10\n", "size: 10 # bytes\n"), ("\n", "\r\n"), ("dir: true\n", "")]:
        agree(base.replace(old, new))
    agree(base)
    assert read_as_pivot_does(base) == Tracked("data", HASH, True, 10, 3)


_chars = st.sampled_from([*"aZ_09./- :#'\"é", "yes", "no", "null", "on", "..", "0b", "1e3"])


@settings(max_examples=60, deadline=None)
@given(st.lists(_chars, min_size=1, max_size=6).map("".join), st.text("0123456789abcdef", min_size=32, max_size=32),
       st.booleans(), st.integers(0, 10**12), st.integers(0, 10**6))
def test_a_record_reads_back_as_pivot_track_wrote_it(path: str, digest: str, is_dir: bool, size: int,
                                                     files: int) -> None:
    record = Tracked(path, digest, is_dir, size, files if is_dir else None)
    text = yamlio.dumps(record.to_dict())
    fast = tracked_mod.canonical_text(record)
    assert fast is None or fast == text  # what is read without YAML is exactly what YAML writes
    agree(text)
