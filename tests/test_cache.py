"""The content-addressed cache (DESIGN §3): object naming, restoring without running, directory
outputs, `pivot checkout`, link modes, IncrementalOut, .gitignore, and rollback of a failed stage.

Every stage appends its name to `runs.log`, outside its outputs, so a test can tell whether a
stage function was called or its outputs came from the cache.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import xxhash
import yaml
from conftest import Project, make_git_repo

LOG_HELPER = '''
def log(name):
    with open("runs.log", "a") as f:
        f.write(name + "\\n")
'''


def logged(source: str) -> str:
    """A pipeline module: the `log` helper, then `source` (dedented)."""
    return LOG_HELPER + textwrap.dedent(source)


UPPER = logged('''
    import os
    from pivot import stage


    @stage(deps=["data/raw.txt"], outs=["data/upper.txt"])
    def upper():
        log("upper")
        text = open("data/raw.txt").read()
        open("data/upper.txt", "w").write(text.upper())
''')

TREE = logged('''
    import os
    from pivot import stage


    @stage(deps=["data/raw.txt"], outs=["tree"])
    def tree():
        log("tree")
        text = open("data/raw.txt").read()
        os.makedirs("tree/sub/deeper", exist_ok=True)
        open("tree/a.txt", "w").write(text)
        open("tree/sub/b.txt", "w").write(text.upper())
        open("tree/sub/deeper/c.bin", "wb").write(bytes(range(256)))
''')


@pytest.fixture(autouse=True)
def _python_writes_bytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run pivot as users do, with Python writing __pycache__ (see test_skipping.py)."""
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)


# -- helpers ----------------------------------------------------------------


def runs(p: Project) -> list[str]:
    """Stage functions called since the last call (from runs.log), then forget them."""
    log = p.root / "runs.log"
    if not log.exists():
        return []
    names = log.read_text().split()
    log.unlink()
    return names


def xxh(data: bytes | str) -> str:
    return xxhash.xxh3_128_hexdigest(data.encode() if isinstance(data, str) else data)


def obj(p: Project, digest: str) -> Path:
    return p.root / ".pivot" / "cache" / "files" / digest[:2] / digest[2:]


def out_record(p: Project, stage: str, path: str) -> dict[str, Any]:
    lock = yaml.safe_load(p.lock(stage))
    (rec,) = [o for o in lock["outs"] if o["path"] == path]
    return rec


def tree_of(folder: Path) -> dict[str, bytes]:
    """Every file below folder (relative POSIX path -> bytes), symlinks followed."""
    return {
        os.path.relpath(os.path.join(d, f), folder).replace(os.sep, "/"): Path(d, f).read_bytes()
        for d, _dirs, files in os.walk(folder) for f in files
    }


def set_link_mode(p: Project, mode: str) -> None:
    p.write(".pivot/config.yaml", f"pipeline: pipeline.py\ncache:\n  link: {mode}\n")


def read_only(path: Path) -> bool:
    return stat.S_IMODE(os.stat(path).st_mode) & 0o222 == 0


def setup(p: Project, pipeline: str, raw: str = "hello\n") -> Project:
    p.write("data/raw.txt", raw)
    p.pipeline(pipeline)
    p.pivot("run")
    return p


Build = Callable[..., Project]


@pytest.fixture(scope="module")
def _templates() -> dict[tuple[str, str], Path]:
    return {}


@pytest.fixture
def built(_templates: dict[tuple[str, str], Path], tmp_path_factory: pytest.TempPathFactory,
          tmp_path: Path) -> Build:
    """built(pipeline, raw): a project where `pipeline` has run once on data/raw.txt = raw.
    Each is built once per module, then copied: every test gets its own work tree, .git and
    .pivot (less the per-machine hash memo)."""

    def build(pipeline: str, raw: str = "hello\n") -> Project:
        key = (pipeline, raw)
        if key not in _templates:
            root = tmp_path_factory.mktemp("template") / "proj"
            make_git_repo(root)
            template = Project(root)
            template.pivot("init")
            setup(template, pipeline, raw)
            assert runs(template), "the template's stages did not run"
            _templates[key] = root
        dest = tmp_path / "proj"
        shutil.copytree(_templates[key], dest, symlinks=True)
        for memo in (dest / ".pivot").glob("state.db*"):
            memo.unlink()
        return Project(dest)

    return build


def check_ignore(p: Project, path: str) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=p.root).returncode == 0


# -- objects ------------------------------------------------------------------


UPPER_TREE = UPPER + TREE.replace(LOG_HELPER, "")


def test_objects_are_named_by_the_xxh3_128_of_their_content(built: Build) -> None:
    p = built(UPPER_TREE)
    digest = xxh("HELLO\n")
    assert out_record(p, "upper", "data/upper.txt") == {"path": "data/upper.txt", "hash": digest, "type": "out"}
    assert obj(p, digest).read_bytes() == b"HELLO\n"
    assert obj(p, digest) == p.root / ".pivot/cache/files" / digest[:2] / digest[2:]
    # every object, file or directory manifest, is named by the hash of its bytes, and read-only
    objects = p.cache_objects()
    # HELLO (data/upper.txt and tree/sub/b.txt: stored once), hello, c.bin, and tree's manifest
    assert len(objects) == 4
    for o in objects:
        assert len(o.parent.name) == 2 and len(o.name) == 30
        assert xxh(o.read_bytes()) == o.parent.name + o.name, o
        assert read_only(o)
    # nothing half-written is left behind
    tmp = p.root / ".pivot/cache/tmp"
    assert not tmp.exists() or os.listdir(tmp) == []


def test_a_deleted_output_comes_back_from_the_cache_without_running(built: Build) -> None:
    p = built(UPPER)
    lock = p.lock("upper")
    (p.root / "data/upper.txt").unlink()
    out = p.pivot("run").stdout
    assert "upper: up to date; restored data/upper.txt from the cache" in out
    assert runs(p) == []
    assert p.read("data/upper.txt") == "HELLO\n"
    assert p.lock("upper") == lock
    assert "nothing to run" in p.pivot("run").stdout

    # without its object in the cache, the stage has to run again
    (p.root / "data/upper.txt").unlink()
    obj(p, xxh("HELLO\n")).unlink()
    out = p.pivot("run", "--explain").stdout
    assert "output 'data/upper.txt' is missing and not in the cache" in out
    assert runs(p) == ["upper"]
    assert obj(p, xxh("HELLO\n")).read_bytes() == b"HELLO\n"


# -- directory outputs ------------------------------------------------------------


def test_a_directory_output_round_trips_through_the_cache(built: Build) -> None:
    p = built(TREE)
    made = tree_of(p.root / "tree")
    assert sorted(made) == ["a.txt", "sub/b.txt", "sub/deeper/c.bin"]
    rec = out_record(p, "tree", "tree")
    assert rec["dir"] is True and rec["type"] == "out"
    manifest = json.loads(obj(p, str(rec["hash"])).read_bytes())
    assert {(e["path"], e["hash"]) for e in manifest} == {(k, xxh(v)) for k, v in made.items()}
    for _rel, data in made.items():
        assert obj(p, xxh(data)).read_bytes() == data

    # deleted: restored identically, by `run` and by `checkout`, without running the stage
    shutil.rmtree(p.root / "tree")
    assert "restored tree from the cache" in p.pivot("run").stdout
    assert tree_of(p.root / "tree") == made
    shutil.rmtree(p.root / "tree")
    assert p.pivot("checkout").stdout.strip() == "restored tree"
    assert tree_of(p.root / "tree") == made
    assert runs(p) == []

    # a file added inside: the locked folder comes back from the cache without running the stage,
    # and the replaced version is kept in the cache
    p.write("tree/sub/extra.txt", "extra")
    out = p.pivot("run").stdout
    assert "tree: 'tree' differed from its lock; that version was kept in the cache as manifest" in out
    assert "(1 file(s) newly stored)" in out
    assert runs(p) == []
    assert tree_of(p.root / "tree") == made
    assert out_record(p, "tree", "tree") == rec
    assert obj(p, xxh("extra")).read_text() == "extra"
    kept = {xxh(json.dumps([{"hash": xxh(v), "path": k, "size": len(v)} for k, v in sorted(
        {**made, "sub/extra.txt": b"extra"}.items())], sort_keys=True, separators=(",", ":")))}
    assert kept <= {o.parent.name + o.name for o in p.cache_objects()}


# -- pivot checkout -----------------------------------------------------------------


def test_checkout_restores_outputs_but_keeps_edits_the_cache_cannot_bring_back(built: Build) -> None:
    p = built(UPPER_TREE)
    p.write("data/raw.txt", "bye\n")
    p.pivot("run")
    assert sorted(runs(p)) == ["tree", "upper"]
    assert p.pivot("checkout").stdout.strip() == "all outputs already match their lock files"
    tree = tree_of(p.root / "tree")

    # deleted, and only the named stage's outputs
    (p.root / "data/upper.txt").unlink()
    shutil.rmtree(p.root / "tree")
    out = p.pivot("checkout", "upper").stdout
    assert out.strip() == "restored data/upper.txt"
    assert p.read("data/upper.txt") == "BYE\n" and not p.exists("tree")
    assert p.pivot("checkout").stdout.strip() == "restored tree"
    assert tree_of(p.root / "tree") == tree

    # modified to an older version that is in the cache: nothing is lost, so it is restored
    p.write("data/upper.txt", "HELLO\n")
    assert p.pivot("checkout").stdout.strip() == "restored data/upper.txt"
    assert p.read("data/upper.txt") == "BYE\n"

    # modified to content the cache does not hold: kept, unless --force
    p.write("data/upper.txt", "my precious edit")
    proc = p.pivot("checkout", check=False)
    assert "kept data/upper.txt: it was modified and its current content is not in the cache" in proc.stderr
    assert "--force" in proc.stderr
    assert p.read("data/upper.txt") == "my precious edit"
    assert "restored data/upper.txt" in p.pivot("checkout", "--force").stdout
    assert p.read("data/upper.txt") == "BYE\n"
    assert runs(p) == []

    # an object missing from the cache is reported, not guessed at
    (p.root / "data/upper.txt").unlink()
    obj(p, xxh("BYE\n")).unlink()
    proc = p.pivot("checkout", check=False)
    assert "not in the cache: data/upper.txt" in proc.stderr
    assert not p.exists("data/upper.txt")


def test_checkout_restores_a_file_deleted_from_a_directory_output(built: Build) -> None:
    p = built(TREE)
    made = tree_of(p.root / "tree")
    (p.root / "tree/sub/b.txt").unlink()
    proc = p.pivot("checkout", check=None)
    assert (proc.returncode, proc.stdout.strip()) == (0, "restored tree"), proc.stderr
    assert tree_of(p.root / "tree") == made


# -- link modes ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "copy"])
def test_editing_a_workspace_output_in_place_never_changes_the_cache(built: Build, mode: str) -> None:
    p = built(UPPER)
    if mode != "auto":  # auto is what `pivot init` writes
        set_link_mode(p, mode)
    assert yaml.safe_load(p.read(".pivot/config.yaml"))["cache"]["link"] == mode
    cached = obj(p, xxh("HELLO\n"))

    def scribble(path: Path) -> None:
        """Overwrite the file's bytes in place (same inode), as root may even if it is read-only."""
        with open(path, "r+b") as f:
            f.write(b"XX")
        assert path.read_bytes() == b"XXLLO\n"

    out = p.root / "data/upper.txt"
    assert not os.path.samefile(out, cached)
    scribble(out)  # the output as the run left it
    assert cached.read_bytes() == b"HELLO\n"

    p.pivot("checkout", "--force")
    assert out.read_bytes() == b"HELLO\n" and not out.is_symlink()
    scribble(out)  # a file restored by checkout
    assert cached.read_bytes() == b"HELLO\n"

    out.unlink()
    assert "restored data/upper.txt" in p.pivot("run").stdout
    scribble(out)  # a file restored by run
    assert cached.read_bytes() == b"HELLO\n"
    assert runs(p) == []


LINKED = logged('''
    import os
    from pivot import stage, IncrementalOut


    @stage(deps=["data/raw.txt"], outs=["data/upper.txt", "tree", IncrementalOut("history.txt")])
    def linked():
        log("linked")
        text = open("data/raw.txt").read()
        open("data/upper.txt", "w").write(text.upper())
        os.makedirs("tree/sub", exist_ok=True)
        open("tree/sub/b.txt", "w").write(text)
        with open("history.txt", "a") as f:
            f.write("line\\n")
''')


def test_hardlink_mode_links_outputs_to_read_only_objects(project: Project) -> None:
    set_link_mode(project, "hardlink")
    p = setup(project, LINKED)
    up, b, hist = (p.root / rel for rel in ("data/upper.txt", "tree/sub/b.txt", "history.txt"))
    first_history = obj(p, xxh("line\n"))
    for path, data in ((up, "HELLO\n"), (b, "hello\n"), (hist, "line\n")):
        assert path.read_text() == data
        assert os.path.samefile(path, obj(p, xxh(data))), path
        assert read_only(obj(p, xxh(data)))
    assert "nothing to run" in p.pivot("run").stdout

    up.unlink()
    shutil.rmtree(p.root / "tree")
    assert "restored data/upper.txt, tree from the cache" in p.pivot("run").stdout
    assert os.path.samefile(up, obj(p, xxh("HELLO\n"))) and os.path.samefile(b, obj(p, xxh("hello\n")))
    up.unlink()
    p.pivot("checkout")
    assert os.path.samefile(up, obj(p, xxh("HELLO\n")))
    assert runs(p) == ["linked"]

    # the IncrementalOut is handed to the stage as a private copy: appending leaves the object alone
    p.pivot("run", "--force")
    assert hist.read_text() == "line\nline\n"
    assert first_history.read_text() == "line\n"
    assert os.path.samefile(hist, obj(p, xxh("line\nline\n")))


def test_symlink_mode_links_outputs_to_objects(project: Project) -> None:
    set_link_mode(project, "symlink")
    p = setup(project, LINKED)
    up, b = p.root / "data/upper.txt", p.root / "tree/sub/b.txt"
    for path, data in ((up, "HELLO\n"), (b, "hello\n")):
        assert path.is_symlink() and path.resolve() == obj(p, xxh(data)).resolve()
        assert path.read_text() == data
    assert "nothing to run" in p.pivot("run").stdout

    up.unlink()
    shutil.rmtree(p.root / "tree")
    assert "restored data/upper.txt, tree from the cache" in p.pivot("run").stdout
    assert up.is_symlink() and up.read_text() == "HELLO\n"
    assert b.is_symlink() and b.read_text() == "hello\n"
    up.unlink()
    p.pivot("checkout", "linked")
    assert up.is_symlink() and up.resolve() == obj(p, xxh("HELLO\n")).resolve()
    assert runs(p) == ["linked"]
    assert p.pivot("status").stdout.strip() == "all 1 stage(s) up to date"


def edit_in_place(path: Path, text: str) -> None:
    """What an editor saving in place, or `>>`, does: write into the existing file. A non-root
    user would first need a chmod; root (as in CI) needs nothing."""
    target = path.resolve()
    os.chmod(target, 0o644)
    with open(path, "a") as f:
        f.write(text)


def assert_objects_hold_their_names(p: Project) -> None:
    for o in p.cache_objects():
        assert xxh(o.read_bytes()) == o.parent.name + o.name, f"{o} no longer holds its content"


@pytest.mark.parametrize("mode", ["hardlink", "symlink"])
def test_an_edit_through_a_link_into_the_cache_is_caught_and_the_stage_runs(project: Project, mode: str) -> None:
    """The workspace file is the cache object, so an edit in place changes the object under its
    old name. Pivot used to "restore" the output from that object, record it as up to date and
    keep the edited content for ever; now it sees the damage, takes the object out and re-runs."""
    set_link_mode(project, mode)
    p = setup(project, LINKED)
    runs(p)
    up, b = p.root / "data/upper.txt", p.root / "tree/sub/b.txt"
    edit_in_place(up, "EDITED\n")
    edit_in_place(b, "EDITED\n")

    before = sorted(str(o) for o in p.cache_objects())
    status = p.pivot("status", "--explain")
    assert "output 'data/upper.txt' was changed in place through a link into the cache" in status.stdout
    assert "output 'tree' was changed in place through a link into the cache" in status.stdout
    assert sorted(str(o) for o in p.cache_objects()) == before, "status must change nothing"

    out = p.pivot("run").stdout
    assert f"'data/upper.txt' changed in place through a {mode} into the cache" in out
    assert f"'tree/sub/b.txt' changed in place through a {mode} into the cache" in out
    assert runs(p) == ["linked"]
    assert up.read_text() == "HELLO\n" and b.read_text() == "hello\n"
    assert_objects_hold_their_names(p)
    assert p.pivot("status").stdout.strip() == "all 1 stage(s) up to date"
    assert runs(p) == []


@pytest.mark.parametrize("mode", ["hardlink", "symlink"])
def test_checkout_and_pull_do_not_hand_back_a_damaged_object(project: Project, mode: str, tmp_path: Path) -> None:
    set_link_mode(project, mode)
    p = setup(project, LINKED)
    p.pivot("remote", "add", "store", str(tmp_path / "store"), "--default")
    p.pivot("push")
    up = p.root / "data/upper.txt"
    edit_in_place(up, "EDITED\n")

    co = p.pivot("checkout", check=False)
    assert f"warning: 'data/upper.txt' changed in place through a {mode} into the cache" in co.stderr
    assert "not in the cache: data/upper.txt" in co.stderr
    # the edit is kept, as an ordinary file, and the cache holds nothing false
    assert up.read_text() == "HELLO\nEDITED\n" and not up.is_symlink()
    assert not obj(p, xxh("HELLO\n")).exists()
    assert_objects_hold_their_names(p)

    # the remote still has the locked version: pull brings it back (over the edit with --force)
    pulled = p.pivot("pull", "--force")
    assert "fetched 1 object(s)" in pulled.stdout, pulled.stdout
    assert up.read_text() == "HELLO\n"
    assert_objects_hold_their_names(p)
    assert p.pivot("status").stdout.strip() == "all 1 stage(s) up to date"

    # pull, when the damage is found by pull itself: it fetches the good copy at once
    edit_in_place(up, "AGAIN\n")
    pulled = p.pivot("pull", "--force")
    assert f"warning: 'data/upper.txt' changed in place through a {mode}" in pulled.stderr
    assert up.read_text() == "HELLO\n"
    assert_objects_hold_their_names(p)
    assert runs(p) == ["linked"]  # only the setup run: nothing was re-run


def test_a_damaged_object_on_another_file_system_is_moved_back_as_a_copy(project: Project,
                                                                        cache_elsewhere: Path) -> None:
    """Symlinks may cross file systems (here .pivot/cache lives on /dev/shm), where the object
    cannot be renamed into the workspace: it is copied there, then removed."""
    set_link_mode(project, "symlink")
    p = setup(project, LINKED)
    up = p.root / "data/upper.txt"
    assert up.is_symlink()
    edit_in_place(up, "EDITED\n")
    co = p.pivot("checkout", check=False)
    assert "warning: 'data/upper.txt' changed in place through a symlink" in co.stderr, co.stderr
    assert "Traceback" not in co.stderr
    assert not up.is_symlink() and up.read_text() == "HELLO\nEDITED\n"
    assert not obj(p, xxh("HELLO\n")).exists()
    assert_objects_hold_their_names(p)
    assert sorted(f.name for f in up.parent.iterdir()) == ["raw.txt", "upper.txt"]


@pytest.fixture
def cache_elsewhere(project: Project) -> Iterator[Path]:
    """.pivot/cache as a symlink to a folder on another file system (/dev/shm)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(project.root).st_dev:
        pytest.skip("needs /dev/shm on a file system other than the project's")
    elsewhere = Path(tempfile.mkdtemp(dir=shm))
    (project.root / ".pivot" / "cache").symlink_to(elsewhere)
    yield elsewhere
    shutil.rmtree(elsewhere, ignore_errors=True)


def test_hardlink_mode_across_file_systems_fails_the_stage_with_advice(project: Project, cache_elsewhere: Path) -> None:
    """The worker's error used to be taken for a dead worker ("its worker process died"), and
    the stage retried; now it is the stage's failure, said plainly, and nothing is kept."""
    set_link_mode(project, "hardlink")
    project.write("data/raw.txt", "hello\n")
    project.pipeline(LINKED)
    run = project.pivot("run", check=False)
    assert run.returncode == 1
    assert "cache.link is 'hardlink' but" in run.stderr and "use 'symlink', 'copy' or 'auto'" in run.stderr, run.stderr
    assert "worker process died" not in run.stderr + run.stdout
    assert "retrying" not in run.stdout
    assert "Traceback" not in run.stderr
    assert not (project.root / ".pivot/stages/linked.lock").exists()
    assert not (project.root / "data/upper.txt").exists()


# -- IncrementalOut -------------------------------------------------------------------

GROW = logged('''
    from pivot import stage, IncrementalOut


    @stage(outs=[IncrementalOut("history.txt")])
    def grow():
        log("grow")
        with open("history.txt", "a") as f:
            f.write("line\\n")
''')


def test_an_incremental_output_starts_from_its_previous_version(project: Project) -> None:
    p = setup(project, GROW)
    assert p.read("history.txt") == "line\n"
    p.pivot("run", "--force")
    assert p.read("history.txt") == "line\n" * 2
    assert out_record(p, "grow", "history.txt")["type"] == "incremental"
    assert obj(p, xxh("line\n")).read_text() == "line\n"  # the first version is untouched

    # deleted while up to date: restored, not run
    (p.root / "history.txt").unlink()
    assert "restored history.txt from the cache" in p.pivot("run").stdout
    assert p.read("history.txt") == "line\n" * 2
    assert runs(p) == ["grow", "grow"]

    # deleted before it runs: the stage still starts from the last version
    (p.root / "history.txt").unlink()
    p.pivot("run", "--force")
    assert runs(p) == ["grow"]
    assert p.read("history.txt") == "line\n" * 3


# -- .gitignore -----------------------------------------------------------------------


def test_cached_outputs_are_git_ignored_and_metrics_are_not(project: Project) -> None:
    project.write(".gitignore", "*.tmp\n")
    setup(project, logged('''
        import json, os
        from pivot import stage, Out, Metric, Plot, IncrementalOut


        @stage(outs=[Out("models/model.bin"), Plot("plots/loss.csv", x="epoch", y="loss"),
                     Metric("metrics.json"), IncrementalOut("history.txt"), "tree"])
        def everything():
            os.makedirs("models", exist_ok=True)
            os.makedirs("plots", exist_ok=True)
            os.makedirs("tree", exist_ok=True)
            open("models/model.bin", "wb").write(b"\\0\\1")
            open("plots/loss.csv", "w").write("epoch,loss\\n1,0.5\\n")
            json.dump({"acc": 1.0}, open("metrics.json", "w"))
            open("history.txt", "a").write("x\\n")
            open("tree/t.txt", "w").write("t")
    '''))
    p = project
    for path in ("models/model.bin", "plots/loss.csv", "history.txt", "tree", "tree/t.txt"):
        assert check_ignore(p, path), path
    assert not check_ignore(p, "metrics.json")
    assert "*.tmp" in p.read(".gitignore").splitlines()  # the user's own lines stay
    untracked = set(p.git("status", "--porcelain", "--untracked-files=all").splitlines())
    assert "?? metrics.json" in untracked
    assert "?? .pivot/stages/everything.lock" in untracked
    hidden = ("model.bin", "loss.csv", "history.txt", "tree/", ".pivot/cache", ".pivot/state.db",
              ".pivot/tmp", ".pivot/logs")
    assert not [u for u in untracked if any(h in u for h in hidden)]


# -- a failing stage ----------------------------------------------------------------------

FRAGILE = logged('''
    import os
    from pivot import stage


    @stage(deps=["data/raw.txt"], outs=["data/out.txt", "tree"])
    def fragile():
        log("fragile")
        with open("seen.log", "a") as f:  # what the stage found when it started
            f.write(f"{os.path.exists('data/out.txt')} {os.path.exists('tree')}\\n")
        text = open("data/raw.txt").read()
        os.makedirs("tree", exist_ok=True)
        open("tree/new.txt", "w").write(text)
        open("data/out.txt", "w").write(text)
        if "boom" in text:
            raise RuntimeError("stage exploded")
        os.rename("tree/new.txt", "tree/good.txt")
''')


def test_a_failing_stage_puts_the_previous_outputs_back(project: Project) -> None:
    p = setup(project, FRAGILE, raw="good\n")
    lock = p.lock("fragile")
    objects = p.cache_objects()
    p.write("data/raw.txt", "boom\n")
    proc = p.pivot("run", check=False)
    assert "fragile: FAILED" in proc.stderr and "RuntimeError: stage exploded" in proc.stderr
    assert runs(p) == ["fragile", "fragile"]
    assert p.read("seen.log").splitlines() == ["False False", "False False"]  # moved aside first
    assert p.read("data/out.txt") == "good\n"
    assert tree_of(p.root / "tree") == {"good.txt": b"good\n"}
    assert p.lock("fragile") == lock
    assert p.cache_objects() == objects
    backups = p.root / ".pivot/tmp/backup"
    assert not backups.exists() or os.listdir(backups) == []


# -- the Python API ------------------------------------------------------------------------


def test_restore_in_process(project: Project, clean_modules: None) -> None:
    from pivot.executor import InlineExecutor
    from pivot.repo import Repo
    from pivot.reporter import Reporter
    from pivot.run import Runner, RunOptions, plan

    project.write("data/raw.txt", "hello\n")
    project.pipeline(UPPER_TREE)
    repo = Repo.load(project.root)
    try:
        summary = Runner(repo, Reporter(), executor_factory=InlineExecutor).run(RunOptions())
        assert sorted(summary.ran) == ["tree", "upper"]
        shutil.rmtree(project.root / "tree")
        (project.root / "data/upper.txt").unlink()
        decisions = {p.name: p.decision for p in plan(repo)}
        assert {n: (d.run, [r.path for r in d.restore]) for n, d in decisions.items()} == {
            "upper": (False, ["data/upper.txt"]), "tree": (False, ["tree"])}
        assert all(repo.in_cache(r) for d in decisions.values() for r in d.restore)
        summary = Runner(repo, Reporter(), executor_factory=InlineExecutor).run(RunOptions())
        assert (summary.ran, sorted(summary.skipped)) == ([], ["tree", "upper"])
    finally:
        repo.close()
    assert project.read("data/upper.txt") == "HELLO\n"
    assert tree_of(project.root / "tree")["sub/b.txt"] == b"HELLO\n"
    assert sorted(runs(project)) == ["tree", "upper"]
