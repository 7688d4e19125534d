"""The pre-commit check after an edit of the pipeline's code: when nothing but the modules' bytes
changed since a clean full check, and no stage's fingerprint, params, deps or outputs did, it
passes without planning (checkmemo.code_only); any edit a stage depends on is still seen. The
group memos of a large module are append-only logs (pivot/memolog.py): damaged ones are ignored."""

from __future__ import annotations

import os
import time
from pathlib import Path

from conftest import Project
from hypothesis import given, settings
from hypothesis import strategies as st
from test_hooks import PIPELINE, setup
from test_large_modules import module

from pivot import memolog

CODE_ONLY = "only the pipeline's code changed since the last full check"


def _remembered(project: Project) -> None:
    """A clean full check recorded as the memo (files younger than 2 s are not trusted)."""
    time.sleep(2.1)
    assert "all 2 stage(s) match" in project.pivot("verify").stdout


def _staged_check(project: Project, text: str) -> str:
    project.pipeline(text)
    project.git("add", "pipeline.py")
    return project.pivot("verify", "--staged", check=None).stdout


def test_an_edit_no_stage_depends_on_is_checked_without_planning(project: Project) -> None:
    """Also right after another such edit: a module changed less than 2 s ago is remembered when
    the check imported and summarised the bytes it hashed."""
    setup(project)
    _remembered(project)
    out = _staged_check(project, PIPELINE.replace("def final():", "def final():  # a comment") + "\nUNUSED = 1\n")
    assert CODE_ONLY in out and "all 2 stage(s) match" in out
    out = _staged_check(project, PIPELINE.replace("def final():", "def final():  # another") + "\nUNUSED = 2\n")
    assert CODE_ONLY in out and "all 2 stage(s) match" in out


def test_an_edit_a_stage_depends_on_is_seen_after_a_memo(project: Project) -> None:
    """A helper's body, a module-level constant and a decorator's argument: each makes its stage
    stale, with the memo of a clean check in place."""
    setup(project)
    edits = [
        (PIPELINE.replace("text.upper() * SCALE", "text.lower() * SCALE"), "loud: stale"),  # a helper
        (PIPELINE.replace("SCALE = 2", "SCALE = 3"), "loud: stale"),  # a constant it reads
        (PIPELINE.replace('outs=["data/final.txt"]', 'outs=["data/final2.txt"]'), "final: stale"),  # a decorator
    ]
    for text, stale in edits:
        _remembered(project)
        out = _staged_check(project, text)
        assert stale in out and CODE_ONLY not in out, out
        project.git("checkout", "HEAD", "--", "pipeline.py")


def test_memo_log_keeps_the_latest_entries_and_compacts(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    log = memolog.read(path)
    assert not log.clean and log.entries == {}
    live = {f"k{i}": [i, "x" * 100] for i in range(50)}
    memolog.write(path, log, live, set(live))
    sizes = []
    for round_ in range(100):  # each appends one changed entry
        log = memolog.read(path)
        assert log.clean and log.entries == live
        live = {**live, "k7": [round_, "y" * 100]}
        memolog.write(path, log, live, {"k7"})
        sizes.append(os.path.getsize(path))
    log = memolog.read(path)
    assert log.entries == live
    assert sizes[1] - sizes[0] == log.sizes["k7"]  # an append of the changed entry alone
    live_size = len(memolog.MAGIC) + sum(log.sizes.values())
    assert max(sizes) <= 2 * live_size < live_size + 99 * log.sizes["k7"]  # compacted, not only appended


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(min_value=0, max_value=4000), flips=st.lists(st.integers(min_value=0, max_value=4000),
                                                                  max_size=3))
def test_a_damaged_memo_log_gives_only_entries_written(tmp_path_factory: object, cut: int, flips: list[int]) -> None:
    """Truncated or with bytes changed anywhere: reading never fails, and every entry read is one
    that was written; the next write leaves a clean log."""
    folder = tmp_path_factory.mktemp("log")  # type: ignore[attr-defined]  # pytest's TempPathFactory
    path = str(folder / "log")
    live = {f"k{i}": ["v" * (i % 7), i] for i in range(60)}
    memolog.write(path, memolog.read(path), live, set(live))
    data = bytearray(Path(path).read_bytes())
    for at in flips:
        if at < len(data):
            data[at] ^= 0x5A
    Path(path).write_bytes(bytes(data[:cut] if cut < len(data) else data))
    log = memolog.read(path)
    assert all(live[k] == v for k, v in log.entries.items())
    memolog.write(path, log, live, set(live) - set(log.entries))
    again = memolog.read(path)
    assert again.clean and again.entries == live


def test_damaged_group_memos_of_a_large_pipeline_are_ignored(project: Project) -> None:
    """Every group memo file cut short: status still sees an edited stage, and only it."""
    source = module(400)
    project.pipeline(source)
    project.write("data/in.txt", "x\n")
    project.pivot("run")
    memos = [p for p in (project.root / ".pivot" / "tmp" / "pycache").iterdir()
             if p.name.startswith(("summary-", "groups3-"))]
    assert len(memos) == 2
    for p in memos:
        data = p.read_bytes()
        p.write_bytes(data[:len(data) // 2] + b"\x00garbage")
    project.pipeline(source.replace('f.write(x + "200")', 'f.write(x + "200 edited")'))
    status = project.pivot("status").stdout
    assert "s200" in status and "s201" not in status and "s199" not in status
    assert all(memolog.read(str(p)).clean for p in memos)  # rewritten from what is live


PARAMS_PIPELINE = '''
import pydantic
from pivot import stage


class P(pydantic.BaseModel):
    n: int = 1


@stage(outs=["out.txt"], params=P)
def make(params: P):
    open("out.txt", "w").write(str(params.n))
'''


def test_a_params_default_edited_is_seen_after_a_memo(project: Project) -> None:
    """A field's default is no part of the fingerprint (params are compared by value): the
    code-only path compares the params too."""
    project.pipeline(PARAMS_PIPELINE)
    project.pivot("run")
    project.pivot("hooks", "install")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "first")
    time.sleep(2.1)
    assert "all 1 stage(s) match" in project.pivot("verify").stdout
    out = _staged_check(project, PARAMS_PIPELINE.replace("n: int = 1", "n: int = 2"))
    assert "make: stale" in out and CODE_ONLY not in out, out
