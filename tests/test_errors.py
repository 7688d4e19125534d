"""User mistakes reach the user as one `error: ` line, exit code 1, no traceback, and change nothing.

Every test drives the real `pivot` CLI in a real git work tree (see conftest.py). A refused
command is checked against a snapshot of the whole project tree (every file's bytes, .pivot/
included) taken before it ran, so a refusal that leaves a lock, a cache object, a .gitignore
edit or a moved output behind fails the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import PIVOT, Project, make_git_repo

# -- helpers -------------------------------------------------------------------------------

# Per-machine scratch that any pivot command may touch: the hash memo and the run lock/temp folder.
# Python's own bytecode cache (__pycache__) is written by the interpreter when it imports the
# user's modules, not by pivot, so it is left out too.
@pytest.fixture(autouse=True)
def _crash_reports_stay_in_the_test(tmp_path_factory: pytest.TempPathFactory,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """pivot writes the report of an internal error with tempfile; keep those out of the real /tmp."""
    monkeypatch.setenv("TMPDIR", str(tmp_path_factory.mktemp("tmpdir")))


def _crash_report(stderr: str) -> str:
    match = re.search(r"report: (\S+?)\)", stderr)
    if match and os.path.exists(match.group(1)):
        return "\n" + Path(match.group(1)).read_text()
    return ""


def _volatile(rel: str) -> bool:
    return (rel.startswith(".pivot/state.db") or rel == ".pivot/tmp" or rel.startswith(".pivot/tmp/")
            or "__pycache__" in rel.split("/"))


def snapshot(root: Path) -> dict[str, object]:
    """Every file (bytes), symlink (target) and folder below root, keyed by POSIX relative path."""
    found: dict[str, object] = {}
    for folder, dirs, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root).replace(os.sep, "/")
        for d in list(dirs):
            rel = d if rel_folder == "." else f"{rel_folder}/{d}"
            if _volatile(rel):
                dirs.remove(d)
                continue
            full = os.path.join(folder, d)
            if os.path.islink(full):
                found[rel] = ("symlink", os.readlink(full))
                dirs.remove(d)
            else:
                found[rel] = "<dir>"
        for f in files:
            rel = f if rel_folder == "." else f"{rel_folder}/{f}"
            if _volatile(rel):
                continue
            full = os.path.join(folder, f)
            if os.path.islink(full):
                found[rel] = ("symlink", os.readlink(full))
            else:
                with open(full, "rb") as fh:
                    found[rel] = fh.read()
    return found


def assert_same_tree(before: dict[str, object], after: dict[str, object]) -> None:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (added or removed or changed), (
        f"the refused command changed the project: added={added} removed={removed} changed={changed}"
    )


def assert_one_error_line(proc: subprocess.CompletedProcess[str], *names: str) -> str:
    """Exit code 1, no traceback, stderr is exactly one `error: ` line naming every one of `names`."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "internal error" not in proc.stderr, proc.stderr + _crash_report(proc.stderr)
    assert proc.returncode == 1, f"exit code {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    line = lines[0]
    assert line.startswith("error: "), line
    for name in names:
        assert name in line, f"{name!r} not named in: {line}"
    return line


def refused(project: Project, *args: str, names: tuple[str, ...] = (), cwd: Path | None = None) -> str:
    """Run a pivot command that must be refused; check the message and that nothing on disk changed."""
    before = snapshot(project.root)
    proc = project.pivot(*args, check=None, cwd=cwd)
    line = assert_one_error_line(proc, *names)
    assert_same_tree(before, snapshot(project.root))
    return line


def run_events(project: Project, *args: str,
               check: bool | None = True) -> tuple[list[dict], subprocess.CompletedProcess[str]]:
    """`pivot run --json`: the events (one JSON object a line) and the process."""
    proc = project.pivot("run", "--json", *args, check=check)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip().startswith("{")]
    return events, proc


def stages_with(events: list[dict], kind: str) -> list[str]:
    return [e["stage"] for e in events if e.get("event") == kind]


GOOD = '''
from pivot import stage

@stage(deps=["data/raw.txt"], outs=["data/upper.txt"])
def upper():
    open("data/upper.txt", "w").write(open("data/raw.txt").read().upper())

@stage(deps=["data/upper.txt"], outs=["data/count.txt"])
def count():
    open("data/count.txt", "w").write(str(len(open("data/upper.txt").read())))
'''


_TEMPLATES: dict[str, Path] = {}


def cloned(key: str, build: Callable[[Project], None], factory: pytest.TempPathFactory, dest: Path) -> Project:
    """A copy of a project built once per session by `build` (after `git init` and `pivot init`).
    Copying a finished project costs milliseconds; building it costs several CLI calls."""
    if key not in _TEMPLATES:
        root = factory.mktemp(f"template-{key}") / "proj"
        make_git_repo(root)
        template = Project(root)
        template.pivot("init")
        build(template)
        _TEMPLATES[key] = root
    shutil.copytree(_TEMPLATES[key], dest, symlinks=True)
    return Project(dest)


def _build_ran(p: Project) -> None:
    p.write("data/raw.txt", "hello\n")
    p.pipeline(GOOD)
    p.pivot("run")
    assert p.exists(".pivot/stages/upper.lock") and p.exists(".pivot/stages/count.lock")
    assert p.cache_objects()


@pytest.fixture
def ran(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Project:
    """A project whose pipeline ran once: locks, cache objects, .gitignore and outputs exist."""
    return cloned("ran", _build_ran, tmp_path_factory, tmp_path / "proj")


def lock_files(project: Project) -> list[str]:
    d = project.root / ".pivot" / "stages"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


# -- the graph ------------------------------------------------------------------------------


def _rotations(cycle: list[str]) -> list[str]:
    """`a -> b -> c -> a` and its rotations (`b -> c -> a -> b`, ...): the same cycle, same direction."""
    return [" -> ".join(cycle[i:] + cycle[:i] + [cycle[i]]) for i in range(len(cycle))]


@pytest.mark.parametrize("command", ["run", "status"])
def test_two_stage_cycle_is_named_in_data_flow_order(ran: Project, command: str) -> None:
    # alpha reads beta's output and beta reads alpha's: alpha -> beta -> alpha
    ran.pipeline('''
        from pivot import stage

        @stage(deps=["b.txt"], outs=["a.txt"])
        def alpha():
            pass

        @stage(deps=["a.txt"], outs=["b.txt"])
        def beta():
            pass
    ''')
    line = refused(ran, command, names=("cycle", "alpha", "beta"))
    assert any(form in line for form in _rotations(["alpha", "beta"])), line


@pytest.mark.parametrize("command", ["run", "status"])
def test_three_stage_cycle_is_named_in_data_flow_order(ran: Project, command: str) -> None:
    # alpha feeds beta, beta feeds gamma, gamma feeds alpha
    ran.pipeline('''
        from pivot import stage

        @stage(deps=["c.txt"], outs=["a.txt"])
        def alpha():
            pass

        @stage(deps=["a.txt"], outs=["b.txt"])
        def beta():
            pass

        @stage(deps=["b.txt"], outs=["c.txt"])
        def gamma():
            pass
    ''')
    line = refused(ran, command, names=("cycle", "alpha", "beta", "gamma"))
    forward = _rotations(["alpha", "beta", "gamma"])
    backward = _rotations(["gamma", "beta", "alpha"])
    assert any(form in line for form in forward), f"expected one of {forward} in: {line}"
    assert not any(form in line for form in backward), line


def test_cycle_among_other_stages_names_only_the_cycle(ran: Project) -> None:
    ran.pipeline('''
        from pivot import stage

        @stage(outs=["start.txt"])
        def head():
            pass

        @stage(deps=["start.txt", "c.txt"], outs=["a.txt"])
        def alpha():
            pass

        @stage(deps=["a.txt"], outs=["b.txt"])
        def beta():
            pass

        @stage(deps=["b.txt"], outs=["c.txt"])
        def gamma():
            pass

        @stage(deps=["c.txt"], outs=["end.txt"])
        def tail():
            pass
    ''')
    line = refused(ran, "run")
    assert any(form in line for form in _rotations(["alpha", "beta", "gamma"])), line
    assert "head" not in line and "tail" not in line, line


@pytest.mark.parametrize("dep,out", [("x.txt", "x.txt"), ("out/part.txt", "out")],
                         ids=["same-path", "dep-inside-own-out"])
def test_self_dependency_is_a_cycle(ran: Project, dep: str, out: str) -> None:
    ran.pipeline(f'''
        from pivot import stage

        @stage(deps=["{dep}"], outs=["{out}"])
        def selfish():
            pass
    ''')
    line = refused(ran, "run", names=("cycle", "selfish -> selfish"))
    assert line.count("selfish") >= 2


def test_two_stages_declaring_one_output(ran: Project) -> None:
    ran.pipeline('''
        from pivot import stage

        @stage(outs=["shared/model.pkl"])
        def first():
            pass

        @stage(outs=["shared/model.pkl"])
        def second():
            pass
    ''')
    refused(ran, "run", names=("first", "second", "shared/model.pkl"))


def test_same_output_spelled_two_ways_is_one_output(ran: Project) -> None:
    ran.pipeline('''
        from pivot import stage

        @stage(outs=["shared/model.pkl"])
        def first():
            pass

        @stage(outs=["./shared//model.pkl"])
        def second():
            pass
    ''')
    refused(ran, "run", names=("first", "second", "shared/model.pkl"))


def test_output_inside_another_stages_output(ran: Project) -> None:
    ran.pipeline('''
        from pivot import stage

        @stage(outs=["models/best.pkl"])
        def inner():
            pass

        @stage(outs=["models"])
        def outer():
            pass
    ''')
    refused(ran, "status", names=("inner", "outer", "models/best.pkl", "'models'"))
    refused(ran, "run", names=("inner", "outer", "models/best.pkl", "'models'"))


def test_output_inside_the_same_stages_other_output(ran: Project) -> None:
    ran.pipeline('''
        from pivot import stage

        @stage(outs=["models", "models/deep/best.pkl"])
        def train():
            pass
    ''')
    refused(ran, "run", names=("train", "models/deep/best.pkl", "'models'"))


@pytest.mark.parametrize("role", ["deps", "outs"])
@pytest.mark.parametrize("bad", ["/etc/hostname", "../outside.txt", "data/../../outside.txt"])
def test_path_outside_the_project_is_refused(ran: Project, role: str, bad: str) -> None:
    ran.pipeline(f'''
        from pivot import stage

        @stage({role}=["{bad}"])
        def wanderer():
            pass
    ''')
    line = refused(ran, "run", names=("wanderer", bad))
    assert ("dep" if role == "deps" else "output") in line


def test_paths_pivot_or_git_own_and_the_root_itself_are_refused(ran: Project) -> None:
    for role, bad, word in [("outs", ".", "root"), ("outs", ".pivot/cache/x", ".pivot"),
                            ("deps", ".git/config", ".git"), ("outs", "", "empty")]:
        ran.pipeline(f'''
            from pivot import stage

            @stage({role}=["{bad}"])
            def trespasser():
                pass
        ''')
        refused(ran, "run", names=("trespasser", word))


def test_dep_nobody_produces_and_not_on_disk(ran: Project) -> None:
    ran.pipeline('''
        from pivot import stage

        @stage(deps=["data/raw.txt", "data/missing.csv"], outs=["data/out.txt"])
        def needy():
            pass
    ''')
    refused(ran, "run", names=("needy", "data/missing.csv"))
    refused(ran, "status", names=("needy", "data/missing.csv"))


# -- params.yaml ----------------------------------------------------------------------------

PARAMS_PIPELINE = '''
from pydantic import BaseModel
from pivot import stage

class TrainParams(BaseModel):
    learning_rate: float = 0.01
    epochs: int = 3

@stage(deps=["data/raw.txt"], outs=["model.txt"], params=TrainParams)
def train(params: TrainParams):
    open("model.txt", "w").write(f"{params.learning_rate} {params.epochs}")

@stage(deps=["model.txt"], outs=["report.txt"])
def report():
    open("report.txt", "w").write(open("model.txt").read())
'''


def _build_with_params(p: Project) -> None:
    p.write("data/raw.txt", "hello\n")
    p.pipeline(PARAMS_PIPELINE)
    p.write("params.yaml", "train:\n  epochs: 5\n")
    p.pivot("run")
    assert p.read("model.txt") == "0.01 5"


@pytest.fixture
def with_params(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Project:
    """A project with a params model and a params.yaml override, run once."""
    return cloned("params", _build_with_params, tmp_path_factory, tmp_path / "proj")


@pytest.mark.parametrize("command", ["run", "status"])
def test_params_malformed_yaml(with_params: Project, command: str) -> None:
    with_params.write("params.yaml", "train:\n  epochs: [5\n  learning_rate: 0.1\n")
    refused(with_params, command, names=("params.yaml",))


@pytest.mark.parametrize("command", ["run", "status"])
def test_params_unknown_key_names_stage_field_and_file(with_params: Project, command: str) -> None:
    with_params.write("params.yaml", "train:\n  epochs: 5\n  learnin_rate: 0.1\n")
    refused(with_params, command, names=("params.yaml", "train", "learnin_rate"))


@pytest.mark.parametrize("command", ["run", "status"])
def test_params_wrong_type_names_stage_field_and_file(with_params: Project, command: str) -> None:
    with_params.write("params.yaml", "train:\n  epochs: many\n")
    refused(with_params, command, names=("params.yaml", "train", "epochs"))


def test_params_wrong_type_is_refused_before_any_stage_runs(with_params: Project) -> None:
    # report is stale (its code changed) and comes after train; nothing may run while params are bad
    with_params.pipeline(PARAMS_PIPELINE.replace('open("model.txt").read())', 'open("model.txt").read() + "!")'))
    with_params.write("params.yaml", "train:\n  learning_rate: fast\n")
    refused(with_params, "run", names=("params.yaml", "train", "learning_rate"))


def test_params_section_for_a_stage_that_does_not_exist(with_params: Project) -> None:
    with_params.write("params.yaml", "train:\n  epochs: 5\ntrian:\n  epochs: 6\n")
    refused(with_params, "run", names=("params.yaml", "trian"))
    refused(with_params, "status", names=("params.yaml", "trian"))


def test_params_section_for_a_stage_without_params(with_params: Project) -> None:
    with_params.write("params.yaml", "report:\n  width: 3\n")
    refused(with_params, "run", names=("params.yaml", "report"))


@pytest.mark.parametrize("text", ["- train\n- epochs\n", "just a string\n", "42\n"],
                         ids=["list", "string", "number"])
def test_params_top_level_not_a_mapping(with_params: Project, text: str) -> None:
    with_params.write("params.yaml", text)
    refused(with_params, "run", names=("params.yaml",))


def test_params_required_field_without_a_value(with_params: Project) -> None:
    with_params.pipeline(PARAMS_PIPELINE.replace("epochs: int = 3", "epochs: int\n    seed: int"))
    refused(with_params, "run", names=("train", "seed"))


def test_params_section_not_a_mapping(with_params: Project) -> None:
    with_params.write("params.yaml", "train: 5\n")
    refused(with_params, "run", names=("params.yaml", "train"))


# -- the pipeline module ------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "status", "list"])
def test_pipeline_name_error_names_file_and_line(ran: Project, command: str) -> None:
    ran.pipeline('''
        from pivot import stage

        THRESHOLD = 3

        @stage(outs=["x.txt"])
        def make():
            pass

        LIMIT = THRESHHOLD * 2
    ''')
    refused(ran, command, names=("pipeline.py:10", "NameError", "THRESHHOLD"))


def test_pipeline_syntax_error_names_file_and_line(ran: Project) -> None:
    ran.pipeline('''
        from pivot import stage

        @stage(outs=["x.txt"])
        def make(:
            pass
    ''')
    refused(ran, "run", names=("pipeline.py:5", "SyntaxError"))


def test_syntax_error_in_helper_module_names_helper(ran: Project) -> None:
    ran.write("helpers.py", "def f(:\n    pass\n")
    ran.pipeline('''
        from pivot import stage
        import helpers
    ''')
    refused(ran, "run", names=("helpers.py:1", "SyntaxError"))


def test_missing_module_imported_by_a_helper_names_the_helper_line(ran: Project) -> None:
    ran.write("lib/__init__.py", "")
    ran.write("lib/features.py", '''
        import os

        import numpyy as np
    ''')
    ran.pipeline('''
        from pivot import stage
        from lib import features

        @stage(outs=["x.txt"])
        def make():
            pass
    ''')
    refused(ran, "run", names=(os.path.join("lib", "features.py") + ":4", "numpyy"))


def test_error_raised_in_helper_function_at_import_names_helper_line(ran: Project) -> None:
    ran.write("settings.py", '''
        def load():
            return {"a": 1}["b"]
    ''')
    ran.pipeline('''
        from pivot import stage
        import settings

        CONFIG = settings.load()
    ''')
    refused(ran, "run", names=("settings.py:3", "KeyError"))


def test_missing_pipeline_file(project: Project) -> None:
    project.write("data/raw.txt", "x\n")
    refused(project, "run", names=("pipeline.py",))
    refused(project, "status", names=("pipeline.py",))


def test_duplicate_stage_names(ran: Project) -> None:
    ran.pipeline('''
        from pivot import stage

        @stage(outs=["one.txt"], name="build")
        def build_one():
            pass

        @stage(outs=["two.txt"], name="build")
        def build_two():
            pass
    ''')
    refused(ran, "run", names=("build", "pipeline.py:4", "pipeline.py:8"))


def test_duplicate_stage_names_across_modules(ran: Project) -> None:
    ran.write("more.py", '''
        from pivot import stage

        @stage(outs=["two.txt"])
        def build():
            pass
    ''')
    ran.pipeline('''
        from pivot import stage
        import more

        @stage(outs=["one.txt"])
        def build():
            pass
    ''')
    refused(ran, "run", names=("'build'", "more.py", "pipeline.py"))


def test_stage_on_a_nested_function(ran: Project) -> None:
    ran.pipeline('''
        from pivot import stage

        def make_stage():
            @stage(outs=["x.txt"])
            def inner():
                pass
            return inner

        make_stage()
    ''')
    refused(ran, "run", names=("inner", "module-level"))


def test_stage_on_a_lambda(ran: Project) -> None:
    ran.pipeline('''
        from pivot import stage

        anon = stage(outs=["x.txt"], name="anon")(lambda: None)
    ''')
    refused(ran, "run", names=("anon", "module-level"))


# -- command line and project -----------------------------------------------------------


def test_unknown_stage_name(ran: Project) -> None:
    for command in ("run", "status", "checkout"):
        refused(ran, command, "upper", "uppr", names=("uppr",))


@pytest.mark.parametrize("command", ["run", "status", "list", "checkout"])
def test_outside_any_project(tmp_path: Path, command: str) -> None:
    outside = tmp_path / "not-a-project"
    (outside / "sub").mkdir(parents=True)
    make_git_repo(outside)  # a git work tree, but no .pivot/
    before = snapshot(outside)
    proc = subprocess.run([PIVOT, command], cwd=outside / "sub", capture_output=True, text=True, timeout=60)
    line = assert_one_error_line(proc, "pivot init")
    assert ".pivot" in line
    assert_same_tree(before, snapshot(outside))


def test_commands_work_from_a_subfolder(ran: Project) -> None:
    # the counterpart of the test above: inside a project, any folder finds the root
    proc = ran.pivot("status", cwd=ran.root / "data")
    assert "up to date" in proc.stdout


def test_init_outside_a_git_work_tree(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    proc = subprocess.run([PIVOT, "init"], cwd=folder, capture_output=True, text=True, timeout=60)
    assert_one_error_line(proc, str(folder), "git")
    assert list(folder.iterdir()) == []


def test_init_in_a_git_work_tree_then_again(tmp_path: Path) -> None:
    # the counterpart: init works in a git work tree, and a second init changes nothing
    root = tmp_path / "repo"
    make_git_repo(root)
    subprocess.run([PIVOT, "init"], cwd=root, check=True, capture_output=True, timeout=60)
    assert (root / ".pivot" / "config.yaml").is_file()
    before = snapshot(root)
    proc = subprocess.run([PIVOT, "init"], cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "already exists" in proc.stdout
    assert_same_tree(before, snapshot(root))


@pytest.mark.parametrize("value", ["hardlinks", "[copy]"])
def test_invalid_cache_link_in_config(ran: Project, value: str) -> None:
    text = ran.read(".pivot/config.yaml")
    assert "link: auto" in text
    ran.write(".pivot/config.yaml", text.replace("link: auto", f"link: {value}"))
    for command in ("run", "status", "checkout"):
        refused(ran, command, names=("config.yaml", "cache.link"))


def test_invalid_cache_link_in_local_config(ran: Project) -> None:
    ran.write(".pivot/config.local.yaml", "cache:\n  link: fast\n")
    refused(ran, "run", names=("cache.link", "fast"))


def test_config_naming_a_pipeline_module_that_does_not_exist(ran: Project) -> None:
    text = ran.read(".pivot/config.yaml")
    ran.write(".pivot/config.yaml", text.replace("pipeline: pipeline.py", "pipeline: pipelines.main"))
    refused(ran, "run", names=("pipelines.main",))
    ran.write(".pivot/config.yaml", text.replace("pipeline: pipeline.py", "pipeline: src/pipe.py"))
    refused(ran, "status", names=("src/pipe.py",))


def test_malformed_config_yaml(ran: Project) -> None:
    ran.write(".pivot/config.yaml", "cache: [link: copy\n")
    refused(ran, "run", names=("config.yaml",))


# -- lock files ---------------------------------------------------------------------------

CORRUPT_LOCKS = {
    "yaml-syntax": b"code: {fingerprint: [unclosed\nouts: - -\n",
    "a-list": b"- one\n- two\n",
    "a-string": b"hello there\n",
    "empty": b"",
    "wrong-shape": b"schema: 1\ncode: 5\n",
    "out-without-hash": b"schema: 1\ncode: {fingerprint: abc, manifest: {}}\nouts:\n- path: data/upper.txt\n",
    "merge-conflict": b"<<<<<<< HEAD\nschema: 1\n=======\nschema: 2\n>>>>>>> other\n",
}


def test_corrupt_lock_file(ran: Project) -> None:
    """A lock is derived data: status names an unreadable one (its stage is stale, exit 0) and
    run rewrites it; checkout, which would restore what it says, refuses (tests/test_lock_recovery.py)."""
    where = os.path.join(".pivot", "stages", "upper.lock")
    for garbage in CORRUPT_LOCKS.values():
        (ran.root / ".pivot/stages/upper.lock").write_bytes(garbage)
        assert f"{where} is unreadable" in ran.pivot("status").stdout
    (ran.root / ".pivot/stages/upper.lock").write_bytes(CORRUPT_LOCKS["yaml-syntax"])
    assert where in ran.pivot("run").stderr
    assert ran.lock("upper").startswith("code:")
    (ran.root / ".pivot/stages/upper.lock").write_bytes(CORRUPT_LOCKS["wrong-shape"])
    refused(ran, "checkout", names=(where,))


def _edit_lock(project: Project, stage: str, edit: Callable[[dict], None]) -> None:
    path = project.root / ".pivot" / "stages" / f"{stage}.lock"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))


BADLY_TYPED_LOCKS: dict[str, Callable[[dict], None]] = {
    "manifest-a-string": lambda d: d["code"].__setitem__("manifest", "ab"),
    "params-a-number": lambda d: d.__setitem__("params", 5),
    "hash-a-number": lambda d: d["outs"][0].__setitem__("hash", 5),
    "path-a-list": lambda d: d["outs"][0].__setitem__("path", ["data", "upper.txt"]),
}


def test_lock_with_wrongly_typed_values_is_a_clear_error(ran: Project) -> None:
    pristine = ran.lock("upper")
    for edit in BADLY_TYPED_LOCKS.values():
        ran.write(".pivot/stages/upper.lock", pristine)
        _edit_lock(ran, "upper", edit)
        assert "upper.lock is unreadable" in ran.pivot("status").stdout


def test_lock_hash_that_is_not_a_digest_is_refused(ran: Project, tmp_path: Path) -> None:
    assert ran.root == tmp_path / "proj"
    (tmp_path / "secret.txt").write_text("TOP SECRET\n")  # .pivot/cache/files/../../../../ is tmp_path
    _edit_lock(ran, "upper", lambda d: d["outs"][0].__setitem__("hash", "../../../../secret.txt"))
    before = snapshot(ran.root)
    proc = ran.pivot("checkout", check=None)
    assert "TOP SECRET" not in ran.read("data/upper.txt"), "checkout copied a file from outside the cache"
    assert_one_error_line(proc, "upper.lock")
    assert_same_tree(before, snapshot(ran.root))


def test_binary_lock_file_is_a_clear_error(ran: Project) -> None:
    (ran.root / ".pivot/stages/upper.lock").write_bytes(bytes(range(256)) * 4)
    assert "upper.lock is unreadable (not UTF-8 text" in ran.pivot("status").stdout


def test_corrupt_lock_is_found_before_anything_runs(ran: Project) -> None:
    """upper is stale (its code changed) and count's lock is garbage: the garbage is named before
    upper runs (a warning), and count runs and rewrites it."""
    ran.pipeline(GOOD.replace(".upper())", ".upper().strip())"))
    (ran.root / ".pivot/stages/count.lock").write_bytes(CORRUPT_LOCKS["yaml-syntax"])
    proc = ran.pivot("run", "--json")
    assert json.loads(proc.stdout.splitlines()[0])["event"] == "warning" and "count.lock" in proc.stdout
    assert ran.lock("count").startswith("code:")


# -- stages that fail at run time ----------------------------------------------------------

RAISING = """
from pivot import stage

def helper(n):
    return 10 // n

@stage(deps=["data/raw.txt"], outs=["data/upper.txt"])
def upper():
    open("data/upper.txt", "w").write("PARTIAL")
    helper(0)

@stage(deps=["data/upper.txt"], outs=["data/count.txt"])
def count():
    open("data/count.txt", "w").write("7")

@stage(deps=["data/raw.txt"], outs=["data/side.txt"])
def side():
    open("data/side.txt", "w").write("side v2")
"""


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error: ")]


def _assert_user_traceback(text: str) -> None:
    """The stage's own traceback: the user's file and lines, not pivot's frames."""
    assert "Traceback (most recent call last)" in text, text
    assert 'pipeline.py", line 10, in upper' in text, text
    assert 'pipeline.py", line 5, in helper' in text, text
    assert "return 10 // n" in text, text
    assert "ZeroDivisionError" in text, text
    assert "pivot/run.py" not in text and "pivot/executor.py" not in text, text


def test_raising_stage_shows_user_traceback_and_stops_downstream(ran: Project) -> None:
    upper_lock, count_lock = ran.lock("upper"), ran.lock("count")
    old_out = ran.read("data/upper.txt")
    ran.pipeline(RAISING)
    proc = ran.pivot("run", check=False)
    assert proc.returncode == 1
    _assert_user_traceback(proc.stderr)
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and "upper" in errors[0], proc.stderr
    assert "upper: FAILED" in proc.stderr
    assert "count: not run" in proc.stdout and "count: running" not in proc.stdout
    # no lock written: the old locks are byte-identical, and the previous output is back
    assert ran.lock("upper") == upper_lock and ran.lock("count") == count_lock
    assert ran.read("data/upper.txt") == old_out
    assert ran.read("data/count.txt") == str(len(old_out))


def test_first_run_raising_stage_writes_no_lock_and_no_output(project: Project) -> None:
    project.write("data/raw.txt", "hello\n")
    project.pipeline(RAISING)
    events, proc = run_events(project, "upper", "count", check=False)
    assert proc.returncode == 1
    assert lock_files(project) == []
    assert project.cache_objects() == []
    assert not project.exists("data/upper.txt") and not project.exists("data/count.txt")
    failed = [e for e in events if e.get("event") == "failed"]
    assert [e["stage"] for e in failed] == ["upper"]
    _assert_user_traceback(failed[0]["error"])
    assert stages_with(events, "not_run") == ["count"]


def test_keep_going_runs_the_independent_branch(ran: Project) -> None:
    ran.pipeline(RAISING)
    events, proc = run_events(ran, "--keep-going", check=False)
    assert proc.returncode == 1
    assert stages_with(events, "failed") == ["upper"]
    assert "side" in stages_with(events, "done")
    assert "count" in stages_with(events, "not_run") and "count" not in stages_with(events, "running")
    assert ran.read("data/side.txt") == "side v2"
    assert "path: data/side.txt" in ran.lock("side")
    assert ran.read("data/upper.txt") == "HELLO\n"  # the failed stage's partial output was rolled back
    # without --keep-going, a stage not yet started when the failure is known does not start
    # (-j 1 makes the order certain: side is defined after upper)
    ran.pipeline(RAISING.replace("side v2", "side v3"))
    side_lock = ran.lock("side")
    events, proc = run_events(ran, "-j", "1", check=False)
    assert proc.returncode == 1
    assert "side" not in stages_with(events, "running") and "side" not in stages_with(events, "done")
    assert ran.read("data/side.txt") == "side v2" and ran.lock("side") == side_lock


def test_stage_calling_sys_exit_is_a_failed_stage(ran: Project) -> None:
    ran.pipeline(RAISING.replace("    helper(0)\n", "    import sys\n    sys.exit(3)\n"))
    proc = ran.pivot("run", "--keep-going", check=False)
    assert proc.returncode == 1, proc.stderr
    assert "upper: FAILED" in proc.stderr
    assert "side: done" in proc.stdout
    assert len(_error_lines(proc.stderr)) == 1


def test_stage_that_does_not_produce_its_output(ran: Project) -> None:
    upper_lock = ran.lock("upper")
    ran.pipeline("""
from pivot import stage

@stage(deps=["data/raw.txt"], outs=["data/upper.txt", "data/extra.txt"])
def upper():
    open("data/upper.txt", "w").write("NEW")

@stage(deps=["data/upper.txt"], outs=["data/count.txt"])
def count():
    open("data/count.txt", "w").write("99")
""")
    proc = ran.pivot("run", check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and "upper" in errors[0], proc.stderr
    assert "data/extra.txt" in proc.stderr and "upper: FAILED" in proc.stderr
    assert "count: running" not in proc.stdout and "count: not run" in proc.stdout
    assert ran.lock("upper") == upper_lock
    assert ran.read("data/upper.txt") == "HELLO\n"  # what it did write is rolled back
    assert ran.read("data/count.txt") == "6"
    assert not ran.exists("data/extra.txt")


def test_first_run_stage_that_does_not_produce_its_output_writes_no_lock(project: Project) -> None:
    project.write("data/raw.txt", "hello\n")
    project.pipeline("""
from pivot import stage

@stage(deps=["data/raw.txt"], outs=["data/never.txt"])
def lazy():
    pass

@stage(deps=["data/never.txt"], outs=["data/after.txt"])
def after():
    open("data/after.txt", "w").write("x")
""")
    proc = project.pivot("run", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "lazy: FAILED" in proc.stderr and "data/never.txt" in proc.stderr
    assert len(_error_lines(proc.stderr)) == 1
    assert lock_files(project) == []
    assert project.cache_objects() == []
    assert "after: running" not in proc.stdout and not project.exists("data/after.txt")


def test_failure_then_fix_runs_normally(ran: Project) -> None:
    """The counterpart of the failure tests: once the stage is fixed the run succeeds and locks."""
    ran.pipeline(RAISING)
    ran.pivot("run", check=False)
    ran.pipeline(RAISING.replace("helper(0)", "open('data/upper.txt', 'w').write('FIXED')"))
    events, _ = run_events(ran)
    assert {"upper", "count"} <= set(stages_with(events, "done"))
    assert ran.read("data/upper.txt") == "FIXED" and ran.read("data/count.txt") == "7"
    assert ran.read("data/side.txt") == "side v2"
    status = json.loads(ran.pivot("status", "--json").stdout)
    assert [s["stage"] for s in status if s["stale"]] == []


def test_exit_codes_tell_usage_errors_from_bugs(ran: Project) -> None:
    """1: the user's mistake; 2: the command line is malformed; 70: a bug in pivot (with a report)."""
    assert ran.pivot("run", "nope", check=False).returncode == 1
    assert ran.pivot("run", "--no-such-option", check=False).returncode == 2
    crash = ("import sys, pivot.ops.status as s, pivot.cli.main as m\n"
             "def boom(*a, **k): raise RuntimeError('boom')\n"
             "s.plan_stages = boom\n"
             "m.main(['status'])\n")
    proc = subprocess.run([sys.executable, "-c", crash], cwd=ran.root, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 70, proc.stderr
    assert "internal error: RuntimeError: boom" in proc.stderr and "report:" in proc.stderr
    assert "Traceback" not in proc.stderr
