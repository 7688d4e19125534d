"""Code fingerprints: the before/after corpus through the real CLI, --explain wording, notes,
and in-process checks of the analysis, the cache and hostile values.

The corpus (tests/fingerprint_corpus.py) runs as one project: every case's files are written
side by side (module names suffixed per case), then `pivot run`, the `after` edits,
`pivot status --json` (which stages report a code change), `pivot run` (exactly the stale
stages run) and `pivot status --json` (everything up to date: fingerprints are stable across
processes). Four CLI calls for the whole corpus.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PIVOT, Project, make_git_repo
from fingerprint_corpus import CASES, Case

from pivot.fingerprint import Fingerprinter, summarise
from pivot.state import State
from pivot.status import code_changes

# -- the corpus, batched into one project ---------------------------------------------------------------

_COMBINED_PIPELINE = '''\
"""All corpus cases: each case module's stages are named <prefix>.<function>."""
import importlib

import pivot

_real_stage = pivot.stage


def _prefixed(prefix):
    def stage(*args, name=None, **kwargs):
        def decorate(func):
            return _real_stage(*args, name=f"{prefix}.{name or func.__name__}", **kwargs)(func)
        return decorate
    return stage


for _prefix in PREFIXES:
    pivot.stage = _prefixed(_prefix)  # `from pivot import stage` in the case module gets this
    try:
        importlib.import_module(f"case_{_prefix}")
    finally:
        pivot.stage = _real_stage
'''


def _prefix(index: int) -> str:
    return f"c{index:02d}"


class _Renamer:
    """Moves one case into the shared project: its modules get a per-case suffix."""

    def __init__(self, case: Case, prefix: str) -> None:
        self.case_module = f"case_{prefix}"
        names = {p.split("/")[0].removesuffix(".py") for p in [*case.before, *case.after]
                 if p.endswith(".py") and p != "pipeline.py"}
        self.mapping = {n: f"{n}_{prefix}" for n in names}
        self.mapping["case_self"] = self.case_module
        self.pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(self.mapping))) + r")\b")

    def text(self, text: str) -> str:
        return self.pattern.sub(lambda m: self.mapping[m.group(1)], text)

    def path(self, path: str) -> str:
        if path == "pipeline.py":
            return f"{self.case_module}.py"
        first, sep, rest = path.partition("/")
        stem = first.removesuffix(".py")
        if stem in self.mapping:
            first = self.mapping[stem] + (".py" if first.endswith(".py") else "")
        return first + sep + rest


def _clean_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(var, None)
    env.update(HOME=str(home), GIT_CONFIG_GLOBAL=str(home / ".gitconfig"), GIT_CONFIG_NOSYSTEM="1",
               # a .pyc written less than a second before an edit of the same size would be
               # reused by Python with the old code; tests edit files that fast
               PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONHASHSEED", None)  # every process gets its own: set order must not matter
    return env


def _cli(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([PIVOT, *args], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"pivot {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


def _write(root: Path, rel: str, text: str | None) -> None:
    path = root / rel
    if text is None:
        path.unlink()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _status(root: Path, env: dict[str, str]) -> dict[str, list[str]]:
    """stage -> reasons, for the stale stages."""
    data = json.loads(_cli(root, env, "status", "--json").stdout)
    return {s["stage"]: s["reasons"] for s in data if s["stale"]}


class CorpusRun:
    def __init__(self, stale: dict[str, list[str]], ran: set[str], stale_after: dict[str, list[str]],
                 prefixes: dict[str, str]) -> None:
        self.stale = stale  # after the edits
        self.ran = ran  # by the second `pivot run`
        self.stale_after = stale_after  # after that run
        self.prefixes = prefixes  # case name -> stage prefix


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorpusRun]:
    home = tmp_path_factory.mktemp("home")
    (home / ".gitconfig").write_text("[user]\n\tname = Pivot Tests\n\temail = tests@example.com\n"
                                     "[init]\n\tdefaultBranch = main\n")
    env = _clean_env(home)
    root = tmp_path_factory.mktemp("corpus") / "proj"
    make_git_repo(root)
    _cli(root, env, "init")
    prefixes = {c.name: _prefix(i) for i, c in enumerate(CASES)}
    renamers = {c.name: _Renamer(c, prefixes[c.name]) for c in CASES}
    _write(root, "pipeline.py", _COMBINED_PIPELINE.replace("PREFIXES", repr(sorted(prefixes.values()))))
    for c in CASES:
        r = renamers[c.name]
        for rel, text in c.before.items():
            _write(root, r.path(rel), r.text(text))
    _cli(root, env, "run")
    for c in CASES:
        r = renamers[c.name]
        for rel, edited in c.after.items():
            _write(root, r.path(rel), r.text(edited) if edited is not None else None)
    stale = _status(root, env)
    out = _cli(root, env, "run").stdout
    ran = set(re.findall(r"^(\S+): running", out, re.MULTILINE))
    yield CorpusRun(stale, ran, _status(root, env), prefixes)


def test_corpus_size() -> None:
    assert len(CASES) >= 60
    assert sum(1 for c in CASES if not c.rerun) >= 15  # cosmetic and unrelated edits


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case(corpus: CorpusRun, case: Case) -> None:
    prefix = corpus.prefixes[case.name] + "."
    code_changed = {name[len(prefix):] for name, reasons in corpus.stale.items()
                    if name.startswith(prefix) and any(r.startswith("code:") for r in reasons)}
    reasons = {n: r for n, r in corpus.stale.items() if n.startswith(prefix)}
    assert code_changed == set(case.rerun), f"stale stages and why: {reasons}"


def test_corpus_run_reruns_exactly_the_stale_stages(corpus: CorpusRun) -> None:
    assert corpus.ran == set(corpus.stale)


def test_corpus_up_to_date_after_run(corpus: CorpusRun) -> None:
    volatile = {corpus.prefixes[c.name] for c in CASES if c.volatile}
    left = {n: r for n, r in corpus.stale_after.items() if n.split(".")[0] not in volatile}
    assert left == {}


# -- what --explain says ----------------------------------------------------------------------------------


def test_explain_names_what_changed(project: Project) -> None:
    project.write("helpers.py", '''
        def normalise(xs):
            return [x / 2 for x in xs]
    ''')
    project.write("pkg/__init__.py", "")
    project.write("pkg/sub.py", '''
        def scale(x):
            return x * 2
    ''')
    before = '''
        from pivot import stage
        import helpers
        import pkg.sub

        THRESHOLD = 0.5


        @stage()
        def train():
            return helpers.normalise([THRESHOLD])
    '''
    project.pipeline(before)
    project.pivot("run")
    project.write("helpers.py", '''
        def normalise(xs):
            return [x / 3 for x in xs]
    ''')
    project.pipeline(before.replace("THRESHOLD = 0.5", "THRESHOLD = 0.7")
                     .replace("return helpers.normalise([THRESHOLD])",
                              "return pkg.sub.scale(helpers.normalise([THRESHOLD]))"))
    out = project.pivot("status", "--explain").stdout
    lines = [line.strip() for line in out.splitlines()]
    assert "train: stale" in lines
    assert "- code: helpers.normalise changed (helpers.py)" in lines
    assert "- code: constant THRESHOLD changed (pipeline.py)" in lines
    assert "- code: new dependency pkg.sub.scale (pkg/sub.py)" in lines
    assert "- code: pipeline.train changed (pipeline.py)" in lines


def test_explain_names_params_model_members(project: Project) -> None:
    project.write("tuning.py", '''
        def boost(x):
            return x + 1
    ''')
    before = '''
        from pivot import stage
        import pydantic
        from tuning import boost


        class Hparams(pydantic.BaseModel):
            lr: float = 0.5
            depth: int = 3

            def scaled(self):
                return boost(self.lr) * 2

            @pydantic.field_validator("depth")
            @classmethod
            def check_depth(cls, v):
                if v < 1:
                    raise ValueError("depth must be at least 1")
                return v

            @pydantic.computed_field
            @property
            def area(self) -> int:
                return self.depth * 2


        @stage(params=Hparams)
        def train(params):
            return params.scaled()
    '''
    project.pipeline(before)
    project.pivot("run")
    assert "Hparams" in project.lock("train")
    project.pipeline(before.replace("return boost(self.lr) * 2", "return boost(self.lr) * 4")
                     .replace("if v < 1:", "if v < 2:")
                     .replace("return self.depth * 2", "return 2 * self.depth"))
    project.write("tuning.py", '''
        def boost(x):
            return x + 2
    ''')
    lines = [line.strip() for line in project.pivot("status", "--explain").stdout.splitlines()]
    assert "train: stale" in lines
    assert [line for line in lines if line.startswith("- ")] == [
        "- code: pipeline.Hparams.area changed (pipeline.py)",
        "- code: pipeline.Hparams.check_depth changed (pipeline.py)",
        "- code: pipeline.Hparams.scaled changed (pipeline.py)",
        "- code: tuning.boost changed (tuning.py)",
    ]
    project.pipeline(before.replace("depth: int = 3", "depth: int = 4"))
    project.write("tuning.py", '''
        def boost(x):
            return x + 1
    ''')
    lines = [line.strip() for line in project.pivot("status", "--explain").stdout.splitlines()]
    # a field's default is a params change (with the computed field it feeds), never a code one
    assert [line for line in lines if line.startswith("- ")] == ["- param area: 6 -> 8", "- param depth: 3 -> 4"]


def test_explain_notes_for_conservative_rules(project: Project) -> None:
    project.pipeline('''
        from pivot import stage
        import threading

        GUARD = threading.Lock()


        @stage()
        def train():
            with GUARD:
                return eval("1 + 1")
    ''')
    project.pivot("run")
    assert "notes:" in project.lock("train")
    out = project.pivot("status", "--explain").stdout
    assert "train: up to date" in out
    assert re.search(r"note: pipeline.GUARD: a _thread.lock value cannot be hashed .*statement assigning it "
                     r"in pipeline.py counts instead", out), out
    assert "note: pipeline.train: calls eval(); code reached that way is not fingerprinted" in out


def test_code_changes_wording() -> None:
    old = {"func:pkg.sub.scale": "aa pkg/sub.py", "const:pkg.sub.RATE": "bb pkg/sub.py",
           "closure:pipeline.triple.k": "cc pipeline.py", "pkg:numpy": "1.0", "python:stdlib": "3.11",
           "class:models.Net": "dd models.py", "module:helpers": "ee helpers.py"}
    new = {"func:pkg.sub.scale": "ab pkg/sub.py", "const:pkg.sub.RATE": "bc pkg/sub.py",
           "closure:pipeline.triple.k": "cd pipeline.py", "pkg:numpy": "2.0", "python:stdlib": "3.12",
           "const:src.thing.LIMIT": "ff src/thing.py", "func:helpers.fn": "gg helpers.py"}
    assert code_changes(old, new) == [
        "no longer uses class models.Net (models.py)",
        "closure variable k of pipeline.triple changed (pipeline.py)",
        "constant RATE changed (pkg/sub.py)",
        "new dependency constant LIMIT (src/thing.py)",
        "new dependency helpers.fn (helpers.py)",
        "pkg.sub.scale changed (pkg/sub.py)",
        "no longer uses module helpers (helpers.py)",
        "package numpy changed 1.0 -> 2.0",
        "the Python version changed 3.11 -> 3.12",
    ]


# -- in-process: the analysis -------------------------------------------------------------------------------


def _refs(source: str, key: str) -> list[str]:
    return summarise(textwrap.dedent(source), "<test>")["defs"][key][1]  # type: ignore[no-any-return]


def test_scoping_of_references() -> None:
    source = '''
        import helpers

        def f(a, b=DEFAULT, *args, c, **kw):
            x = a
            for i in helpers.items():
                x += i
            [y for y in GLOBAL_LIST if y > LIMIT]
            try:
                pass
            except Err as e:
                e
            with open(PATH) as fh:
                fh
            def inner(z):
                return z + a + OUTER
            lam = lambda q: q + SCALE
            import os.path
            os.path.join()
            return x, b, args, c, kw, self_attr.thing.deep, getattr(helpers, "fn")
    '''
    assert _refs(source, "f:4") == ["DEFAULT", "Err", "GLOBAL_LIST", "LIMIT", "OUTER", "PATH", "SCALE",
                                    "getattr", "helpers.fn", "helpers.items", "open", "self_attr.thing.deep"]


def test_scoping_class_bodies_and_globals() -> None:
    source = '''
        class A(Base, metaclass=Meta):
            size = SIZE
            double = size * 2

            def m(self):
                return size + helper(self.size)

        def g():
            global counter
            counter = counter + 1
    '''
    assert _refs(source, "c:A") == ["Base", "Meta", "SIZE", "helper", "size"]
    assert _refs(source, "f:9") == ["counter"]


def test_stage_decorator_and_docstrings_do_not_count() -> None:
    a = summarise(textwrap.dedent('''
        from pivot import stage as st

        @st(deps=["a"], outs=["b"])
        def f():
            """doc"""
            return 1
    '''), "<a>")
    b = summarise(textwrap.dedent('''
        from pivot import stage as st

        @st(deps=["a", "c"], outs=["d"], params=P)
        def f():
            return (1)
    '''), "<b>")
    assert a["defs"]["f:4"] == b["defs"]["f:4"]


def test_manifest_keys(tmp_path: Path, clean_modules: None) -> None:
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "sub.py").write_text("from .base import RATE\n\ndef scale(x):\n    return x * RATE\n")
    (root / "pkg" / "base.py").write_text("RATE = 2\n")
    (root / "mod_keys.py").write_text(textwrap.dedent('''
        import functools
        import pkg.sub as s
        import yaml

        class Net:
            def __init__(self, n):
                self.n = n

        NET = Net(2)
        half = functools.partial(s.scale, 0.5)

        def f():
            return s.scale(1) + NET.n + half() + len(yaml.__name__)
    '''))
    sys.path.insert(0, str(root))
    import mod_keys  # type: ignore[import-not-found]

    fp = Fingerprinter(root, None).fingerprint(mod_keys.f)
    assert sorted(fp.manifest) == ["class:mod_keys.Net", "const:mod_keys.NET", "const:mod_keys.half",
                                   "const:pkg.base.RATE", "func:mod_keys.f", "func:pkg.sub.scale",
                                   "pkg:PyYAML", "python:stdlib"]
    assert fp.manifest["func:pkg.sub.scale"].endswith(" pkg/sub.py")
    assert fp.manifest["python:stdlib"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert fp.notes == ()
    again = Fingerprinter(root, None).fingerprint(mod_keys.f)
    assert again == fp


def test_params_model_manifest(tmp_path: Path, clean_modules: None) -> None:
    """The params model adds its members' code and class attributes; fields add nothing, so a
    model with fields only leaves the fingerprint as it is without params."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "mod_pm.py").write_text(textwrap.dedent('''
        import functools
        from typing import Annotated, ClassVar
        import pydantic

        def check(v):
            return v

        class Base(pydantic.BaseModel):
            def shared(self):
                return 1

        class Hparams(Base):
            model_config = pydantic.ConfigDict(extra="forbid")
            FACTOR: ClassVar[int] = 2
            _seen: int = pydantic.PrivateAttr(default=0)
            lr: float = 0.5
            depth: Annotated[int, pydantic.AfterValidator(check)] = 3

            def scaled(self):
                return self.lr * self.FACTOR

            @pydantic.model_validator(mode="after")
            def whole(self):
                return self

            @staticmethod
            def unit():
                return 1

            @functools.cached_property
            def cached(self):
                return 2

        class Fields(pydantic.BaseModel):
            lr: float = 0.5
            depth: int = pydantic.Field(default=3, ge=1)

        def f(params):
            return params.scaled()
    '''))
    sys.path.insert(0, str(root))
    import mod_pm  # type: ignore[import-not-found]

    fingerprinter = Fingerprinter(root, None)
    plain = fingerprinter.fingerprint(mod_pm.f)
    fp = fingerprinter.fingerprint(mod_pm.f, mod_pm.Hparams)
    assert sorted(set(fp.manifest) - set(plain.manifest)) == [
        "const:mod_pm.Hparams.FACTOR", "const:mod_pm.Hparams._seen", "const:mod_pm.Hparams.model_config",
        "func:mod_pm.Base.shared", "func:mod_pm.Hparams.cached", "func:mod_pm.Hparams.scaled",
        "func:mod_pm.Hparams.unit", "func:mod_pm.Hparams.whole", "func:mod_pm.check", "pkg:pydantic",
        "pkg:pydantic_core",
    ]
    assert fp.notes == ()
    assert Fingerprinter(root, None).fingerprint(mod_pm.f, mod_pm.Hparams) == fp
    assert fingerprinter.fingerprint(mod_pm.f, mod_pm.Fields) == plain
    assert Fingerprinter(root, None).fingerprint(mod_pm.f) == plain


def test_values_that_cannot_be_hashed_never_crash(tmp_path: Path, clean_modules: None) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "mod_hostile.py").write_text(textwrap.dedent('''
        import threading

        class Explodes:
            def __reduce_ex__(self, proto):
                raise RuntimeError("no")

        class Cyclic:
            def __init__(self):
                self.me = self

        GEN = (i for i in range(3))
        BOOM = Explodes()
        LOOP = Cyclic()
        DEEP = []
        for _ in range(1000):
            DEEP = [DEEP]
        globals()["INJECTED"] = threading.Lock()

        def make():
            lock = threading.Lock()
            return lambda: lock

        HOLDS = make()

        def f():
            return GEN, BOOM, LOOP, DEEP, INJECTED, HOLDS
    '''))
    sys.path.insert(0, str(root))
    import mod_hostile  # type: ignore[import-not-found]

    fp = Fingerprinter(root, None).fingerprint(mod_hostile.f)
    notes = "\n".join(fp.notes)
    for name in ("GEN", "BOOM", "DEEP"):
        assert f"mod_hostile.{name}: " in notes and "the statement assigning it" in notes
    assert fp.manifest["const:mod_hostile.LOOP"]  # a cycle is fine
    assert "mod_hostile.INJECTED" in notes and "treated as changed on every run" in notes
    assert "the function that created the closure, mod_hostile.make, counts instead" in notes
    assert "func:mod_hostile.make" in fp.manifest


def _old_module(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Any, State, Any]:
    """A module with an old mtime in a fresh project, imported and fingerprinted once with a
    state database: (its file, the module, the state, that fingerprint)."""
    root = tmp_path / "proj"
    root.mkdir()
    src = root / f"{name}.py"
    src.write_text("def f():\n    return 1\n")
    os.utime(src, (PAST, PAST))  # an old mtime: the summary is not "racy" and may be trusted later
    # The ctime cannot be set back: trust a memo taken right after it (the racy rule is tested elsewhere).
    monkeypatch.setattr("pivot.fingerprint.modules.RACY_NS", 0)
    sys.path.insert(0, str(root))
    module = importlib.import_module(name)
    state = State(root / "state.db")
    first = Fingerprinter(root, state).fingerprint(module.f)
    state.commit()
    return src, module, state, first


PAST = 1_000_000_000


def test_summaries_are_cached_by_file_stat(tmp_path: Path, clean_modules: None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    src, mod_cached, state, first = _old_module(tmp_path, "mod_cached", monkeypatch)

    def fail(*_a: Any) -> None:
        raise AssertionError("re-parsed a file whose stat did not change")

    monkeypatch.setattr("pivot.fingerprint.modules.summarise", fail)
    assert Fingerprinter(src.parent, state).fingerprint(mod_cached.f) == first
    state.close()


def test_same_size_edit_with_the_mtime_set_back_is_summarised_again(tmp_path: Path, clean_modules: None,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`cp -p`, `touch -d` or `rsync -t` can put an edited file's mtime back; its ctime moves."""
    src, mod_setback, state, first = _old_module(tmp_path, "mod_setback", monkeypatch)
    time.sleep(0.01)  # a later ctime, on file systems with coarse timestamps too
    src.write_text("def f():\n    return 2\n")  # same size
    os.utime(src, (PAST, PAST))
    second = Fingerprinter(src.parent, state).fingerprint(mod_setback.f)
    state.close()
    assert second.digest != first.digest


def test_set_order_does_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    (tmp_path / "mod_sets.py").write_text("TAGS = {'alpha', 'beta', 'gamma', 'delta'}\n\n"
                                          "def f():\n    return TAGS\n")
    script = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import mod_sets; "
              "from pivot.fingerprint import Fingerprinter; "
              "print(Fingerprinter(Path(sys.argv[1])).fingerprint(mod_sets.f).digest)")
    digests = {subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONHASHSEED": seed,
                                               "PYTHONDONTWRITEBYTECODE": "1"}).stdout
               for seed in ("1", "2", "3")}
    assert len(digests) == 1


def test_help_does_not_import_fingerprinting() -> None:
    code = ("import sys; from pivot.cli.main import cli; "
            "cli.main(['--help'], standalone_mode=False); "
            "assert 'pivot.fingerprint' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_project_path_in_values_does_not_depend_on_the_clone(tmp_path: Path) -> None:
    source = ("from pathlib import Path\nROOT = Path(__file__).parent\nDATA = str(ROOT / 'data')\n"
              "CACHE = Path.home() / '.cache' / 'x'\n\n"
              "def f():\n    return ROOT, DATA, CACHE\n")
    script = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import mod_paths; "
              "from pivot.fingerprint import Fingerprinter; "
              "print(Fingerprinter(Path(sys.argv[1])).fingerprint(mod_paths.f).digest)")
    digests = set()
    for clone, home in (("one", "home-a"), ("elsewhere/two", "home-b")):
        (tmp_path / clone).mkdir(parents=True)
        (tmp_path / clone / "mod_paths.py").write_text(source)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(tmp_path / home)}
        digests.add(subprocess.run([sys.executable, "-c", script, str(tmp_path / clone)], capture_output=True,
                                   text=True, check=True, env=env).stdout)
    assert len(digests) == 1


def test_a_file_edited_after_import_counts_as_changed(tmp_path: Path, clean_modules: None) -> None:
    """The runner fingerprints a stage just before starting it, maybe minutes after the import:
    an edit in between must not be recorded as the code that ran."""
    root = tmp_path / "proj"
    root.mkdir()
    src = root / "mod_edited.py"
    src.write_text("def f():\n    return 1\n")
    past = 1_000_000_000
    os.utime(src, (past, past))
    sys.path.insert(0, str(root))
    import mod_edited  # type: ignore[import-not-found]

    fingerprinter = Fingerprinter(root, None)  # as Repo: created before the pipeline is imported
    assert fingerprinter.fingerprint(mod_edited.f).notes == ()
    fingerprinter = Fingerprinter(root, None)
    src.write_text("def f():\n    return 2\n")  # edited after the run began; the import ran `return 1`
    fp = fingerprinter.fingerprint(mod_edited.f)
    assert fp.manifest["func:mod_edited.f"].startswith("changed-")
    assert fp.notes == ("mod_edited.py: modified while pivot was running; its code counts as changed until "
                        "the next run",)
