"""What runs and what is skipped (DESIGN §2), `--explain` reasons, `status`, `--dry-run`, and lock files.

Every stage here appends its name to `runs.log`, a file outside its outputs, so a test can tell
exactly which stage functions were called, independently of what the CLI prints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import textwrap
from pathlib import Path

import pytest
import xxhash
import yaml
from conftest import Project, make_git_repo

from pivot.reporter import Reporter, Summary

LOG_HELPER = '''
def log(name):
    with open("runs.log", "a") as f:
        f.write(name + "\\n")
'''

# upper -> final; `shout` is a same-module helper, SUFFIX a module constant, `unused` is reached by nothing.
TWO = '''
from pivot import stage
''' + LOG_HELPER + '''
SUFFIX = "!"


def shout(text):
    return text.upper()


def unused():
    return 1


@stage(deps=["data/raw.txt"], outs=["data/upper.txt"])
def upper():
    log("upper")
    text = open("data/raw.txt").read()
    open("data/upper.txt", "w").write(shout(text))


@stage(deps=["data/upper.txt"], outs=["data/final.txt"])
def final():
    log("final")
    text = open("data/upper.txt").read()
    open("data/final.txt", "w").write(text + SUFFIX)
'''


@pytest.fixture(autouse=True)
def _python_writes_bytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run pivot as users do: Python writes __pycache__/*.pyc for pipeline.py (some sandboxes turn
    that off). Edits in these tests therefore always change the file's size, except in the test
    that is about a same-size edit."""
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)


# -- helpers ----------------------------------------------------------------


def logged(source: str) -> str:
    """A pipeline module: the `log` helper, then `source` (dedented)."""
    return LOG_HELPER + textwrap.dedent(source)


def runs(p: Project) -> list[str]:
    """Stage functions called since the last call (from runs.log), then forget them."""
    log = p.root / "runs.log"
    if not log.exists():
        return []
    names = log.read_text().split()
    log.unlink()
    return names


def edit(p: Project, old: str, new: str, rel: str = "pipeline.py") -> None:
    """Replace the one occurrence of `old`. Same-size edits (which Python's own .pyc check can miss)
    are the subject of test_same_size_edit_within_the_same_second_reruns alone, so that a
    regression there fails that test, not others at random."""
    text = p.read(rel)
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {rel}"
    assert len(old) != len(new), "use an edit that changes the file size"
    (p.root / rel).write_text(text.replace(old, new))


def reasons(stdout: str) -> dict[str, list[str]]:
    """{stage: [reason, …]} from `--explain` / `--dry-run` / `status --explain` output."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        m = re.match(r"^(\S+): (running|would run|stale)$", line)
        if m:
            current = found.setdefault(m.group(1), [])
        elif line.startswith("    - ") and current is not None:
            current.append(line[len("    - "):])
        else:
            current = None
    return found


def run(p: Project, *args: str) -> str:
    return p.pivot("run", "--explain", *args).stdout


def _fresh_project(root: Path) -> Project:
    make_git_repo(root)
    p = Project(root)
    p.pivot("init")
    return p


@pytest.fixture(scope="module")
def _templates() -> dict[str, Path]:
    return {}


@pytest.fixture
def two(_templates: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Project:
    """A project where TWO has run once (upper, then final). Built once per module, then copied:
    each test gets its own copy of the work tree, .git and .pivot (less the per-machine memo)."""
    if "two" not in _templates:
        root = tmp_path_factory.mktemp("template") / "two"
        t = _fresh_project(root)
        t.write("data/raw.txt", "hello\n")
        t.pipeline(TWO)
        assert "upper: running" in run(t)
        assert runs(t) == ["upper", "final"]
        _templates["two"] = root
    root = tmp_path / "proj"
    shutil.copytree(_templates["two"], root, symlinks=True)
    for memo in (root / ".pivot").glob("state.db*"):
        memo.unlink()
    return Project(root)


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under root (the .git folder included) with its type, bytes, mode and mtime.

    Left out: pivot's per-machine hash memo (.pivot/state.db*), the project lock file that every
    command takes (.pivot/tmp/run.lock), and compiled code (Python's __pycache__, pivot's
    .pivot/tmp/pycache): none is a workspace, lock or cache change. Folder mtimes are left out
    because the memo's journal comes and goes."""
    snap: dict[str, tuple[object, ...]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in dirs + files:
            full = os.path.join(folder, name)
            rel = os.path.relpath(full, root)
            if rel.startswith((".pivot/state.db", ".pivot/tmp/pycache")) or rel == ".pivot/tmp/run.lock":
                continue
            st = os.lstat(full)
            if os.path.islink(full):
                snap[rel] = ("link", os.readlink(full))
            elif os.path.isdir(full):
                snap[rel] = ("dir", st.st_mode)
            else:
                with open(full, "rb") as f:
                    snap[rel] = ("file", f.read(), st.st_mode, st.st_mtime_ns, st.st_ino)
    return snap


def xxh(data: bytes | str) -> str:
    return xxhash.xxh3_128_hexdigest(data.encode() if isinstance(data, str) else data)


# -- code fingerprint ---------------------------------------------------------


def test_editing_a_stage_function_reruns_only_that_stage(two: Project) -> None:
    p = two
    edit(p, "text + SUFFIX)", "text + SUFFIX + SUFFIX)")
    out = run(p)
    assert runs(p) == ["final"]
    assert reasons(out) == {"final": ["code: pipeline.final changed (pipeline.py)"]}
    assert p.read("data/final.txt") == "HELLO\n!!"
    assert "nothing to run" in run(p)
    assert runs(p) == []


def test_editing_a_same_module_helper_reruns_its_callers(two: Project) -> None:
    p = two
    edit(p, "return text.upper()", "return text.upper() + '?'")
    out = run(p)
    assert runs(p) == ["upper", "final"]
    assert reasons(out) == {
        "upper": ["code: pipeline.shout changed (pipeline.py)"],
        "final": ["dep 'data/upper.txt' changed"],
    }
    assert p.read("data/final.txt") == "HELLO\n?!"


def test_editing_a_helper_in_another_user_module_reruns(project: Project) -> None:
    project.write("data/raw.txt", "abc")
    project.write("helpers.py", "def twice(s):\n    return s * 2\n")
    project.pipeline(logged('''
        import helpers
        from pivot import stage

        @stage(deps=["data/raw.txt"], outs=["out.txt"])
        def doubled():
            log("doubled")
            open("out.txt", "w").write(helpers.twice(open("data/raw.txt").read()))
    '''))
    run(project)
    assert runs(project) == ["doubled"] and project.read("out.txt") == "abcabc"
    edit(project, "return s * 2", "return s + s + s", rel="helpers.py")
    out = run(project)
    assert runs(project) == ["doubled"]
    assert reasons(out) == {"doubled": ["code: helpers.twice changed (helpers.py)"]}
    assert project.read("out.txt") == "abcabcabc"


def test_editing_a_module_constant_reruns_its_users(two: Project) -> None:
    p = two
    edit(p, 'SUFFIX = "!"', 'SUFFIX = "!?"')
    out = run(p)
    assert runs(p) == ["final"]
    assert reasons(out) == {"final": ["code: constant SUFFIX changed (pipeline.py)"]}
    assert p.read("data/final.txt") == "HELLO\n!?"


def test_editing_code_no_stage_reaches_reruns_nothing(two: Project) -> None:
    p = two
    edit(p, "return 1", "return 1 + 41")
    assert "nothing to run" in run(p)
    assert runs(p) == []


def test_comments_docstrings_and_formatting_do_not_rerun(two: Project) -> None:
    p = two
    locks = {n: p.lock(n) for n in ("upper", "final")}
    edits = [
        # a comment inside a stage, and one inside a helper
        ('    log("final")\n', '    # say we ran\n    log("final")  # trailing comment\n'),
        ("    return text.upper()\n", "    # shout it\n    return text.upper()\n"),
        # docstrings on a stage and on a helper
        ("def upper():\n", 'def upper():\n    """Upper-case the raw text."""\n'),
        ("def shout(text):\n", "def shout(text):\n    '''Make it loud.\n\n    Really loud.'''\n"),
        # formatting: spacing, redundant parentheses, blank lines, everything shifted down
        ("text + SUFFIX)", "(text  +  SUFFIX) )"),
        ("\n\n@stage(deps=[\"data/upper.txt\"]", "\n\n\n\n@stage(deps=[\"data/upper.txt\"]"),
        ("from pivot import stage\n", "# a header comment\n# over two lines\n\nfrom pivot import stage\n"),
    ]
    for old, new in edits:
        edit(p, old, new)
        out = run(p)
        assert runs(p) == [], f"edit {new!r} re-ran a stage:\n{out}"
        assert "nothing to run" in out
    assert {n: p.lock(n) for n in locks} == locks


def test_same_size_edit_within_the_same_second_reruns(project: Project) -> None:
    """An editor or script that saves twice within one second, without changing the file size."""
    project.pipeline(logged('''
        from pivot import stage
        N = 1

        @stage(outs=["n.txt"])
        def number():
            log("number")
            open("n.txt", "w").write(str(N))
    '''))
    run(project)
    assert runs(project) == ["number"] and project.read("n.txt") == "1"
    path = project.root / "pipeline.py"
    before = os.stat(path)
    path.write_text(path.read_text().replace("N = 1", "N = 2"))
    # Same whole second as the previous version (what Python's .pyc check compares), but not the
    # same nanosecond, so pivot's own memo of the file cannot be what hides the edit.
    frac = before.st_mtime_ns % 1_000_000_000
    mtime = before.st_mtime_ns + (1 if frac < 999_999_999 else -1)
    os.utime(path, ns=(mtime, mtime))
    assert os.stat(path).st_size == before.st_size
    out = run(project)
    assert project.read("n.txt") == "2", f"stale bytecode ran:\n{out}"
    assert runs(project) == ["number"]
    assert reasons(out) == {"number": ["code: constant N changed (pipeline.py)"]}


# -- params -------------------------------------------------------------------

PARAMS = '''
from pydantic import BaseModel
from pivot import stage
''' + LOG_HELPER + '''

class TrainParams(BaseModel):
    epochs: int = 2
    lr: float = 0.5


@stage(outs=["model.txt"], params=TrainParams)
def train(params: TrainParams):
    log("train")
    open("model.txt", "w").write(f"{params.epochs} {params.lr}")


@stage(outs=["other.txt"])
def other():
    log("other")
    open("other.txt", "w").write("other")
'''


def test_params_rerun_only_when_their_values_change(project: Project) -> None:
    project.pipeline(PARAMS)
    run(project)
    assert sorted(runs(project)) == ["other", "train"]
    lock = yaml.safe_load(project.lock("train"))
    assert lock["params"] == {"epochs": 2, "lr": 0.5}

    # params.yaml naming the default value changes no value: nothing runs
    project.write("params.yaml", "train:\n  epochs: 2\n")
    assert "nothing to run" in run(project)
    assert runs(project) == []

    project.write("params.yaml", "train:\n  epochs: 30\n")
    out = run(project)
    assert runs(project) == ["train"]
    assert reasons(out) == {"train": ["param epochs: 2 -> 30"]}
    assert project.read("model.txt") == "30 0.5"
    assert yaml.safe_load(project.lock("train"))["params"] == {"epochs": 30, "lr": 0.5}

    # a new default in the model
    edit(project, "lr: float = 0.5", "lr: float = 0.25")
    out = run(project)
    assert runs(project) == ["train"]
    assert "param lr: 0.5 -> 0.25" in reasons(out)["train"]
    assert project.read("model.txt") == "30 0.25"
    assert "nothing to run" in run(project)


# -- deps -----------------------------------------------------------------------


def test_touching_a_dep_does_not_rerun_but_changing_it_does(two: Project) -> None:
    p = two
    raw = p.root / "data/raw.txt"
    later = os.stat(raw).st_mtime_ns + 10_000_000_000
    os.utime(raw, ns=(later, later))
    assert "nothing to run" in run(p)
    # rewritten with the same bytes: new mtime (and inode), same content
    raw.unlink()
    raw.write_text("hello\n")
    assert "nothing to run" in run(p)
    assert runs(p) == []

    raw.write_text("goodbye\n")
    out = run(p)
    assert runs(p) == ["upper", "final"]
    assert reasons(out) == {"upper": ["dep 'data/raw.txt' changed"], "final": ["dep 'data/upper.txt' changed"]}
    assert p.read("data/final.txt") == "GOODBYE\n!"


def test_touching_a_file_in_a_directory_dep_does_not_rerun(project: Project) -> None:
    project.write("inputs/a.txt", "a")
    project.write("inputs/sub/b.txt", "b")
    project.pipeline(logged('''
        import os
        from pivot import stage

        @stage(deps=["inputs"], outs=["listing.txt"])
        def listing():
            log("listing")
            names = sorted(os.path.join(d, f) for d, _, fs in os.walk("inputs") for f in fs)
            open("listing.txt", "w").write("\\n".join(names))
    '''))
    run(project)
    assert runs(project) == ["listing"]
    b = project.root / "inputs/sub/b.txt"
    later = os.stat(b).st_mtime_ns + 10_000_000_000
    os.utime(b, ns=(later, later))
    assert "nothing to run" in run(project)
    assert runs(project) == []
    project.write("inputs/sub/c.txt", "c")
    out = run(project)
    assert runs(project) == ["listing"]
    assert reasons(out) == {"listing": ["dep 'inputs' changed"]}
    assert project.read("listing.txt").splitlines()[-1] == "inputs/sub/c.txt"


# -- outputs --------------------------------------------------------------------


def cached_object(p: Project, data: str) -> Path:
    digest = xxh(data)
    return p.root / ".pivot/cache/files" / digest[:2] / digest[2:]


def test_a_modified_output_is_restored_from_the_cache_and_the_edit_kept(two: Project) -> None:
    p = two
    locks = {n: p.lock(n) for n in ("upper", "final")}
    p.write("data/upper.txt", "tampered")
    upper = json.loads(p.pivot("status", "--json").stdout)[0]
    assert (upper["stage"], upper["stale"], upper["restore"]) == ("upper", False, ["data/upper.txt"])
    out = run(p)
    assert runs(p) == []
    kept = cached_object(p, "tampered")
    assert (f"upper: 'data/upper.txt' differed from its lock; that version was kept in the cache as "
            f"{kept.relative_to(p.root)}") in out
    assert kept.read_text() == "tampered"
    assert p.read("data/upper.txt") == "HELLO\n"
    assert {n: p.lock(n) for n in locks} == locks
    assert p.pivot("status").stdout.strip() == "all 2 stage(s) up to date"


def test_status_and_dry_run_agree_with_run_when_a_modified_output_will_be_restored(two: Project) -> None:
    p = two
    p.write("data/upper.txt", "tampered")
    rows = json.loads(p.pivot("status", "--json").stdout)
    dry = p.pivot("run", "--dry-run").stdout
    out = run(p)
    assert runs(p) == [] and "nothing to run" in out
    assert [(r["stage"], r["stale"], r["reasons"]) for r in rows] == [("upper", False, []), ("final", False, [])]
    assert "dry run: 0 would run, 2 up to date" in dry


def test_a_modified_output_whose_locked_version_is_not_cached_reruns_its_stage(two: Project) -> None:
    p = two
    cached_object(p, "HELLO\n").unlink()
    p.write("data/upper.txt", "tampered")
    out = run(p)
    # upper rebuilds byte-identical output, so final (whose dep is unchanged) is skipped
    assert runs(p) == ["upper"]
    assert reasons(out) == {
        "upper": ["output 'data/upper.txt' was modified and its locked version is not in the cache"]}
    assert p.read("data/upper.txt") == "HELLO\n"
    assert cached_object(p, "HELLO\n").read_text() == "HELLO\n"


def test_a_missing_metric_reruns_its_stage(project: Project) -> None:
    project.pipeline(logged('''
        import json
        from pivot import stage, Metric

        @stage(outs=[Metric("metrics.json")])
        def score():
            log("score")
            json.dump({"acc": 0.9}, open("metrics.json", "w"))
    '''))
    run(project)
    assert runs(project) == ["score"]
    (project.root / "metrics.json").unlink()
    out = run(project)
    assert runs(project) == ["score"]
    assert reasons(out) == {"score": ["output 'metrics.json' is missing"]}
    assert json.loads(project.read("metrics.json")) == {"acc": 0.9}


def test_downstream_reruns_only_when_the_upstream_output_bytes_change(project: Project) -> None:
    project.write("data/raw.txt", "abc")
    project.pipeline(logged('''
        from pivot import stage

        @stage(deps=["data/raw.txt"], outs=["len.txt"])
        def count():
            log("count")
            open("len.txt", "w").write(str(len(open("data/raw.txt").read())))


        @stage(deps=["len.txt"], outs=["report.txt"])
        def report():
            log("report")
            open("report.txt", "w").write("length=" + open("len.txt").read())
    '''))
    run(project)
    assert runs(project) == ["count", "report"]
    report_lock = project.lock("report")

    project.write("data/raw.txt", "xyz")  # same length: count re-runs, writes the same bytes
    out = run(project)
    assert runs(project) == ["count"]
    assert list(reasons(out)) == ["count"]
    assert project.lock("report") == report_lock

    project.write("data/raw.txt", "abcd")
    out = run(project)
    assert runs(project) == ["count", "report"]
    assert reasons(out)["report"] == ["dep 'len.txt' changed"]
    assert project.read("report.txt") == "length=4"


# -- the graph changes ------------------------------------------------------------


def test_an_unrelated_new_stage_runs_alone(two: Project) -> None:
    p = two
    locks = {n: p.lock(n) for n in ("upper", "final")}
    # added above the others, so every existing function moves down the file
    edit(p, "SUFFIX = \"!\"\n", 'SUFFIX = "!"\n\n\n@stage(outs=["new.txt"])\ndef newcomer():\n'
         '    log("newcomer")\n    open("new.txt", "w").write("new")\n')
    out = run(p)
    assert runs(p) == ["newcomer"]
    assert reasons(out) == {"newcomer": ["never run: no lock file"]}
    assert {n: p.lock(n) for n in locks} == locks


DECLARED = '''
from pivot import stage, Metric
''' + LOG_HELPER + '''

@stage(deps=["a.txt"], outs=["x.txt"])
def make():
    log("make")
    open("x.txt", "w").write("x")
    open("y.txt", "w").write("y: 1\\n")  # a YAML mapping: y.txt becomes a Metric below
'''


def test_changing_declared_deps_or_outs_reruns(project: Project) -> None:
    project.write("a.txt", "a")
    project.write("b.txt", "b")
    project.pipeline(DECLARED)
    run(project)
    assert runs(project) == ["make"]
    steps = [
        ('deps=["a.txt"], outs=["x.txt"]', 'deps=["a.txt", "b.txt"], outs=["x.txt", "y.txt"]',
         ["dep 'b.txt' added", "output 'y.txt' added"]),
        ('deps=["a.txt", "b.txt"], outs=["x.txt", "y.txt"]', 'deps=["b.txt"], outs=[Metric("y.txt")]',
         ["dep 'a.txt' removed", "output 'x.txt' removed from the stage",
          "output 'y.txt' type changed out -> metric"]),
    ]
    for old, new, why in steps:
        edit(project, old, new)
        out = run(project)
        assert runs(project) == ["make"], f"{new}:\n{out}"
        assert reasons(out) == {"make": why}
    assert "nothing to run" in run(project)
    lock = yaml.safe_load(project.lock("make"))
    assert [d["path"] for d in lock["deps"]] == ["b.txt"]
    assert [(o["path"], o["type"]) for o in lock["outs"]] == [("y.txt", "metric")]


# -- run options --------------------------------------------------------------------


def test_force_reruns_everything_and_writes_the_same_locks(two: Project) -> None:
    p = two
    locks = {n: p.lock(n) for n in ("upper", "final")}
    out = run(p, "--force")
    assert runs(p) == ["upper", "final"]
    assert reasons(out) == {"upper": ["forced"], "final": ["forced"]}
    assert {n: p.lock(n) for n in locks} == locks
    # with --single-stage, --force forces the named stage alone
    p.pivot("run", "--force", "--single-stage", "final")
    assert runs(p) == ["final"]


def test_dry_run_says_what_would_happen_and_changes_nothing(two: Project) -> None:
    p = two
    # upper's output can come from the cache, final's code changed, late has never run
    (p.root / "data/upper.txt").unlink()
    edit(p, 'SUFFIX = "!"', 'SUFFIX = "?!"')
    with open(p.root / "pipeline.py", "a") as f:
        f.write('\n\n@stage(outs=["late.txt"])\ndef late():\n    log("late")\n    open("late.txt", "w").write("l")\n')
    before = snapshot(p.root)

    out = p.pivot("run", "--dry-run").stdout
    assert reasons(out) == {
        "final": ["code: constant SUFFIX changed (pipeline.py)"],
        "late": ["never run: no lock file"],
    }
    assert "upper: would restore data/upper.txt from the cache" in out
    assert "dry run: 2 would run, 1 up to date" in out
    assert reasons(p.pivot("run", "--dry-run", "--force", "upper").stdout) == {"upper": ["forced"]}
    p.pivot("status")
    p.pivot("status", "--explain", "--json")
    assert snapshot(p.root) == before
    assert runs(p) == []

    # and the real run does what the dry run said
    out = run(p)
    assert sorted(runs(p)) == ["final", "late"]
    assert "upper: up to date; restored data/upper.txt from the cache" in out
    assert p.read("data/final.txt") == "HELLO\n?!"


def test_run_target_runs_what_it_needs_and_single_stage_runs_only_it(project: Project) -> None:
    project.write("data/raw.txt", "r")
    project.pipeline(logged('''
        from pivot import stage

        def copy(src, dst, tag):
            log(dst[0])
            open(dst, "w").write(open(src).read() + tag)


        @stage(deps=["data/raw.txt"], outs=["a.txt"])
        def a():
            copy("data/raw.txt", "a.txt", "a")


        @stage(deps=["a.txt"], outs=["b.txt"])
        def b():
            copy("a.txt", "b.txt", "b")


        @stage(deps=["b.txt"], outs=["c.txt"])
        def c():
            copy("b.txt", "c.txt", "c")


        @stage(outs=["d.txt"])
        def d():
            copy("data/raw.txt", "d.txt", "d")
    '''))
    project.pivot("run", "b")
    assert runs(project) == ["a", "b"]
    assert project.read("b.txt") == "rab"
    for name in ("c", "d"):
        assert not project.exists(f"{name}.txt") and not project.exists(f".pivot/stages/{name}.lock")

    project.pivot("run", "c")
    assert runs(project) == ["c"]

    # a is stale and b's code changed: -s b runs b alone, on the a.txt that is there
    project.write("data/raw.txt", "R")
    edit(project, 'copy("a.txt", "b.txt", "b")', 'copy("a.txt", "b.txt", "B!")')
    out = run(project, "--single-stage", "b")
    assert runs(project) == ["b"]
    assert reasons(out) == {"b": ["code: pipeline.b changed (pipeline.py)"]}
    assert project.read("b.txt") == "raB!"
    status = {s["stage"]: s for s in json.loads(project.pivot("status", "--json").stdout)}
    assert {n: s["reasons"] for n, s in status.items()} == {
        "a": ["dep 'data/raw.txt' changed"],
        "b": ["upstream stage 'a' will run"],  # b itself is up to date with the a.txt it used
        "c": ["upstream stage 'b' will run", "dep 'b.txt' changed"],
        "d": ["never run: no lock file"],
    }


def test_status_reports_stale_stages_and_changes_nothing(project: Project) -> None:
    project.write("data/raw.txt", "hello\n")
    project.pipeline(TWO)
    fresh = json.loads(project.pivot("status", "--json").stdout)
    assert [(s["stage"], s["stale"], s["reasons"]) for s in fresh] == [
        ("upper", True, ["never run: no lock file"]),
        ("final", True, ["never run: no lock file"]),
    ]
    assert not project.exists(".pivot/stages/upper.lock") and not project.exists("data/upper.txt")
    run(project)
    runs(project)
    assert project.pivot("status").stdout.strip() == "all 2 stage(s) up to date"

    (project.root / "data/upper.txt").unlink()  # restorable: upper stays up to date, so does final
    edit(project, 'SUFFIX = "!"', 'SUFFIX = "!!!"')
    before = snapshot(project.root)
    rows = json.loads(project.pivot("status", "--json").stdout)
    assert rows == [
        {"stage": "upper", "stale": False, "reasons": [], "restore": ["data/upper.txt"], "notes": []},
        {"stage": "final", "stale": True, "reasons": ["code: constant SUFFIX changed (pipeline.py)"],
         "restore": [], "notes": []},
    ]
    text = project.pivot("status").stdout
    assert "upper: up to date; data/upper.txt will be restored from the cache" in text
    assert "final: stale (code: constant SUFFIX changed (pipeline.py))" in text
    assert "1 of 2 stage(s) stale" in text
    explained = project.pivot("status", "--explain", "final").stdout
    assert reasons(explained) == {"final": ["code: constant SUFFIX changed (pipeline.py)"]}
    assert snapshot(project.root) == before
    assert runs(project) == []


# -- lock files -------------------------------------------------------------------


def _mapping_keys_sorted(node: yaml.Node, where: str = "") -> list[str]:
    """Paths of mappings whose keys are not in sorted order in the text."""
    bad = []
    if isinstance(node, yaml.MappingNode):
        keys = [k.value for k, _ in node.value]
        if keys != sorted(keys):
            bad.append(f"{where or '/'}: {keys}")
        for k, v in node.value:
            bad += _mapping_keys_sorted(v, f"{where}/{k.value}")
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            bad += _mapping_keys_sorted(v, f"{where}[{i}]")
    return bad


def test_lock_records_code_params_deps_and_outs_with_sorted_keys(project: Project) -> None:
    project.write("data/raw.txt", "hello\n")
    project.pipeline(PARAMS.replace('@stage(outs=["model.txt"]', '@stage(deps=["data/raw.txt"], outs=["model.txt"]'))
    project.write("params.yaml", "train:\n  lr: 0.125\n")
    run(project)
    text = project.lock("train")
    assert _mapping_keys_sorted(yaml.compose(text)) == []
    lock = yaml.safe_load(text)
    assert re.fullmatch(r"[0-9a-f]{32}", lock["code"]["fingerprint"])
    assert {"func:pipeline.train", "func:pipeline.log"} <= set(lock["code"]["manifest"])
    assert lock["params"] == {"epochs": 2, "lr": 0.125}
    assert lock["deps"] == [{"path": "data/raw.txt", "hash": xxh("hello\n")}]
    assert lock["outs"] == [{"path": "model.txt", "hash": xxh("2 0.125"), "type": "out"}]
    assert sorted(os.listdir(project.root / ".pivot/stages")) == ["other.lock", "train.lock"]


def test_locks_are_byte_identical_across_fresh_projects(project: Project, tmp_path: Path) -> None:
    other = _fresh_project(tmp_path / "elsewhere" / "copy")
    pipeline = PARAMS + '''

@stage(deps=["data/raw.txt", "model.txt"], outs=["tree", "data/upper.txt"])
def more():
    import os
    os.makedirs("tree/sub", exist_ok=True)
    open("tree/sub/x.txt", "w").write(open("data/raw.txt").read())
    open("data/upper.txt", "w").write(open("model.txt").read().upper())
'''
    for p in (project, other):
        p.write("data/raw.txt", "same input\n")
        p.write("params.yaml", "train:\n  epochs: 7\n")
        p.pipeline(pipeline)
        run(p)

    def locks(p: Project) -> dict[str, bytes]:
        return {f.name: f.read_bytes() for f in sorted((p.root / ".pivot/stages").iterdir())}

    first = locks(project)
    assert sorted(first) == ["more.lock", "other.lock", "train.lock"]
    assert locks(other) == first
    rel = [o.relative_to(project.root) for o in project.cache_objects()]
    assert rel == [o.relative_to(other.root) for o in other.cache_objects()]


FRAGILE = '''
from pivot import stage
''' + LOG_HELPER + '''

@stage(deps=["data/raw.txt"], outs=["out.txt"])
def fragile():
    log("fragile")
    text = open("data/raw.txt").read()
    open("out.txt", "w").write(text)
    if "boom" in text:
        raise ValueError("raw text says boom")


@stage(deps=["out.txt"], outs=["after.txt"])
def after():
    log("after")
    open("after.txt", "w").write(open("out.txt").read())
'''


def test_a_lock_is_written_only_after_the_stage_succeeds(project: Project) -> None:
    project.write("data/raw.txt", "boom\n")
    project.pipeline(FRAGILE)
    proc = project.pivot("run", check=False)
    assert runs(project) == ["fragile"]
    assert "fragile: FAILED" in proc.stderr and "ValueError: raw text says boom" in proc.stderr
    assert "after: not run (upstream stage 'fragile' failed)" in proc.stdout
    assert not project.exists(".pivot/stages/fragile.lock") and not project.exists("out.txt")
    assert os.listdir(project.root / ".pivot/stages") == []

    project.write("data/raw.txt", "fine\n")
    run(project)
    assert runs(project) == ["fragile", "after"]
    lock = project.lock("fragile")

    project.write("data/raw.txt", "boom again\n")
    project.pivot("run", check=False)
    assert runs(project) == ["fragile"]
    assert project.lock("fragile") == lock
    assert sorted(os.listdir(project.root / ".pivot/stages")) == ["after.lock", "fragile.lock"]
    status = json.loads(project.pivot("status", "--json").stdout)
    assert status[0]["reasons"] == ["dep 'data/raw.txt' changed"]


def test_a_stage_that_does_not_write_a_declared_output_fails_without_a_lock(project: Project) -> None:
    project.pipeline('''
        from pivot import stage

        @stage(outs=["made.txt", "forgotten.txt"])
        def forgetful():
            open("made.txt", "w").write("made")
    ''')
    proc = project.pivot("run", check=False)
    assert "did not produce declared output 'forgotten.txt'" in proc.stderr
    assert not project.exists(".pivot/stages/forgetful.lock")
    assert not project.exists("made.txt")


# -- the Python API -------------------------------------------------------------------


class Recorder(Reporter):
    """A reporter that keeps the stages it was told are running, with their reasons."""

    def __init__(self) -> None:
        self.running_events: list[tuple[str, tuple[str, ...]]] = []

    def running(self, stage: str, reasons: tuple[str, ...]) -> None:
        self.running_events.append((stage, reasons))


def test_plan_and_runner_in_process(project: Project, clean_modules: None) -> None:
    from pivot.executor import InlineExecutor
    from pivot.repo import Repo
    from pivot.run import Runner, RunOptions, plan

    def run_inline(repo: Repo, opts: RunOptions, reporter: Reporter | None = None) -> Summary:
        return Runner(repo, reporter or Reporter(), executor_factory=InlineExecutor).run(opts)

    project.write("data/raw.txt", "hello\n")
    project.pipeline(TWO)
    repo = Repo.load(project.root)
    try:
        assert [(p.name, p.decision.run, p.decision.reasons) for p in plan(repo)] == [
            ("upper", True, ("never run: no lock file",)),
            ("final", True, ("never run: no lock file",)),
        ]
        rec = Recorder()
        summary = run_inline(repo, RunOptions(), rec)
        assert (summary.ran, summary.skipped, summary.failed) == (["upper", "final"], [], [])
        assert rec.running_events == [
            ("upper", ("never run: no lock file",)),
            ("final", ("never run: no lock file",)),
        ]
    finally:
        repo.close()
    assert runs(project) == ["upper", "final"]

    project.write("data/raw.txt", "other\n")
    repo = Repo.load(project.root)
    try:
        assert [(p.name, p.decision.run, p.decision.reasons) for p in plan(repo)] == [
            ("upper", True, ("dep 'data/raw.txt' changed",)),
            ("final", True, ("upstream stage 'upper' will run",)),
        ]
        only = plan(repo, ("final",), single=True)
        assert [(p.name, p.decision.run) for p in only] == [("final", False)]
        forced = plan(repo, ("final",), single=True, force=True)
        assert [(p.name, p.decision.reasons) for p in forced] == [("final", ("forced",))]
        summary = run_inline(repo, RunOptions(targets=("final",), single_stage=True))
        assert (summary.ran, summary.skipped) == ([], ["final"])
        summary = run_inline(repo, RunOptions(targets=("upper",)))
        assert summary.ran == ["upper"]
    finally:
        repo.close()
    assert runs(project) == ["upper"]
    assert project.read("data/upper.txt") == "OTHER\n"
    assert project.read("data/final.txt") == "HELLO\n!"


def test_compiled_code_cache_keeps_the_newest_entries(tmp_path: Path) -> None:
    """Every edit of a project module adds a compiled entry; past 2 * KEEP the oldest go."""
    from pivot.importing import KEEP, FreshSourceLoader

    cache = tmp_path / "pycache"
    cache.mkdir()
    for i in range(2 * KEEP):
        entry = cache / f"old{i:04d}"
        entry.write_bytes(b"x")
        os.utime(entry, (1_000_000 + i, 1_000_000 + i))
    module = tmp_path / "mod.py"
    module.write_text("VALUE = 41\n")
    namespace: dict[str, object] = {}
    exec(FreshSourceLoader("mod", str(module), str(cache)).get_code("mod"), namespace)  # one new entry
    assert namespace["VALUE"] == 41
    left = {p.name for p in cache.iterdir()}
    assert len(left) == KEEP
    assert f"old{2 * KEEP - 1:04d}" in left and "old0000" not in left
    assert len(left - {f"old{i:04d}" for i in range(2 * KEEP)}) == 1  # the new entry stays


def test_gc_forgets_parsed_locks_no_lock_file_has(project: Project) -> None:
    import sqlite3

    project.pipeline(textwrap.dedent("""\
        from pivot import stage

        @stage(deps=["in.txt"], outs=["out.txt"])
        def copy():
            open("out.txt", "w").write(open("in.txt").read())
        """))

    def memo() -> int:
        with sqlite3.connect(project.root / ".pivot/state.db") as db:
            return int(db.execute("SELECT count(*) FROM kv WHERE key LIKE 'lock%'").fetchone()[0])

    lock = project.root / ".pivot/stages/copy.lock"
    for text in ("one\n", "two\n", "three\n"):
        project.write("in.txt", text)
        project.pivot("run")  # remembers the lock it writes by its stat (and bytes), not parsed
        lock.write_bytes(lock.read_bytes())  # same bytes, another ctime: the next read parses them
        project.pivot("status")  # parses (and remembers by content) the lock
    assert memo() >= 2
    project.pivot("gc", "--yes")
    assert memo() == 1
    assert "up to date" in project.pivot("status").stdout
    assert memo() == 1  # the kept entry still serves; nothing new was parsed


def test_gc_forgets_hashes_of_files_that_are_gone(project: Project) -> None:
    import sqlite3

    project.pipeline(textwrap.dedent("""\
        from pivot import stage

        @stage(deps=["a.txt", "b.txt"], outs=["out.txt"])
        def join():
            open("out.txt", "w").write(open("a.txt").read() + open("b.txt").read())
        """))
    project.write("a.txt", "a\n")
    project.write("b.txt", "b\n")
    project.pivot("run")

    def remembered() -> set[str]:
        with sqlite3.connect(project.root / ".pivot/state.db") as db:
            return {p for (p,) in db.execute("SELECT path FROM hashes")}

    assert {"a.txt", "b.txt"} <= remembered()
    (project.root / "b.txt").unlink()
    project.pivot("gc")
    assert "a.txt" in remembered() and "b.txt" not in remembered()
