"""A large pipeline module (thousands of stages) is compiled and summarised one group of
top-level statements at a time, never as one syntax tree: the same code, lines and digests as
reading it whole, at a fraction of the memory."""

from __future__ import annotations

import gc
import importlib.util
import os
import textwrap
import time
import tracemalloc
import types
import warnings
from pathlib import Path

import pytest
from conftest import Project

from pivot.fingerprint.summary import GroupMemo, summarise
from pivot.importing import GROUPED, CodeMemo, compile_chunks, compile_source, loader_for

STAGE = textwrap.dedent('''\
    @stage(deps=["data/in.txt"], outs=["data/out{i}.txt"])
    def s{i}():
        with open("data/in.txt") as f:
            x = f.read()
        with open("data/out{i}.txt", "w") as f:
            f.write(x + "{i}")

    ''')


def module(stages: int, tail: str = "") -> str:
    return "from pivot import stage\n\n" + "".join(STAGE.format(i=i) for i in range(stages)) + tail


def functions(code: types.CodeType) -> dict[tuple[str, int], tuple[bytes, list[object]]]:
    found = {}
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            found[(c.co_qualname, c.co_firstlineno)] = (c.co_code, list(c.co_positions()))
            found.update(functions(c))
    return found


def test_a_large_module_compiles_in_groups_to_the_code_of_the_whole_file(tmp_path: Path) -> None:
    source = "from __future__ import annotations\n" + module(400, tail=textwrap.dedent('''\
        def annotated(x: Undefined) -> Undefined:  # a string, under the __future__ import
            return x
        if True:
            A = 1
        else:
            A = 2
        T = """
        def not_code():
        """
        '''))
    assert len(source) > GROUPED
    path = str(tmp_path / "pipeline.py")
    groups = compile_chunks(source.encode(), path)
    whole = compile_source(source.encode(), path)
    assert len(groups) > 10
    found: dict[tuple[str, int], tuple[bytes, list[object]]] = {}
    for code in groups:
        found.update(functions(code))
    assert found == functions(whole)  # names, first lines, bytecode and every position


def test_a_syntax_error_in_a_large_module_is_the_whole_files(tmp_path: Path) -> None:
    source = module(400, tail="def broken(:\n    pass\n").encode()
    path = str(tmp_path / "pipeline.py")
    with pytest.raises(SyntaxError) as whole:
        compile_source(source, path)
    with pytest.raises(SyntaxError) as grouped:
        compile_chunks(source, path)
    assert (grouped.value.lineno, grouped.value.msg) == (whole.value.lineno, whole.value.msg)


def test_a_warning_in_a_large_module_names_its_line_in_the_file(tmp_path: Path) -> None:
    source = module(400, tail='X = 1 is 1\n').encode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compile_chunks(source, str(tmp_path / "pipeline.py"))
    assert [(w.category, w.lineno) for w in caught] == [(SyntaxWarning, source.count(b"\n"))]


def test_importing_a_large_module_holds_no_whole_syntax_tree(tmp_path: Path) -> None:
    """Peak traced memory of importing and of summarising: a small multiple of the source, where
    a whole syntax tree takes about a hundred times its size."""
    source = module(1500)
    path = tmp_path / "pipeline.py"
    path.write_text(source)
    loader = loader_for(str(tmp_path), "big_pipeline", str(path))
    spec = importlib.util.spec_from_file_location("big_pipeline", path, loader=loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    tracemalloc.start()
    try:
        loader.exec_module(mod)
        _, compiling = tracemalloc.get_traced_memory()
        gc.collect()  # what the import left behind is not summarise's (its amount depends on earlier tests)
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        summary = summarise(source, str(path))
        summarising = tracemalloc.get_traced_memory()[1] - held
    finally:
        tracemalloc.stop()
    assert len(summary["defs"]) == 1500
    assert compiling < 50 * len(source), compiling  # compiled whole: over 110 times
    assert summarising < 20 * len(source), summarising  # a whole tree: about 75 times


# A last stage that fails: its traceback must name its line in the whole file.
FAILING_LAST = textwrap.dedent('''\
    @stage(deps=["data/in.txt"], outs=["data/last.txt"])
    def last():
        raise ValueError("from the last stage")
    ''')


def test_a_stage_of_a_large_pipeline_fails_naming_its_line(project: Project) -> None:
    """The traceback of a stage near the end of a large module, and its fingerprint (keyed by
    the function's first line), are those of the whole file."""
    source = module(400, tail=FAILING_LAST)
    project.pipeline(source)
    project.write("data/in.txt", "x\n")
    result = project.pivot("run", "last", check=False)
    line = source.count("\n")
    assert f'pipeline.py", line {line}, in last' in result.stdout + result.stderr
    project.pipeline(source.replace('raise ValueError("from the last stage")', 'open("data/last.txt", "w")'))
    project.pivot("run", "last")
    assert "up to date" in project.pivot("status", "last").stdout


def _edited(source: str, stage: int, extra_lines: int) -> str:
    """`source` with the body of stage `stage` changed (and `extra_lines` lines added to it)."""
    old = f'        f.write(x + "{stage}")\n'
    assert old in source
    return source.replace(old, f'        f.write(x + "{stage} edited")\n' + "    y = 1\n" * extra_lines)


@pytest.mark.parametrize("extra_lines", [0, 3])
def test_an_edit_compiles_only_its_group_again_to_the_code_of_the_whole_file(tmp_path: Path,
                                                                             extra_lines: int) -> None:
    """Compiled groups are remembered by their text: after an edit only the edited group is
    compiled, and the groups after it are moved to their new lines."""
    source = module(400)
    path = str(tmp_path / "pipeline.py")
    memo = CodeMemo()
    compile_chunks(source.encode(), path, memo)
    edited = _edited(source, 200, extra_lines).encode()
    again = CodeMemo(memo.new)
    groups = compile_chunks(edited, path, again)
    assert again.compiled == 1
    assert len(again.new) == len(memo.new)  # the groups of this version only
    found: dict[tuple[str, int], tuple[bytes, list[object]]] = {}
    for code in groups:
        found.update(functions(code))
    assert found == functions(compile_source(edited, path))  # names, first lines, bytecode, positions


@pytest.mark.parametrize("extra_lines", [0, 3])
def test_an_edit_summarises_only_its_group_again_to_the_summary_of_the_whole_file(extra_lines: int) -> None:
    source = module(400)
    memo = GroupMemo()
    before = summarise(source, "/project/pipeline.py", memo)
    edited = _edited(source, 200, extra_lines)
    again = GroupMemo(memo.new)
    after = summarise(edited, "/project/pipeline.py", again)
    assert again.read == 1
    assert after == summarise(edited, "/project/pipeline.py")  # every digest, line and reference
    assert after["file"] != before["file"]
    key = f"f:{edited[:edited.index('def s200(')].count(chr(10))}"  # its first line: the decorator's
    assert after["defs"][key][0] != before["defs"][key][0]  # the edited function's own digest


def test_groups_read_with_other_names_of_stage_are_read_again() -> None:
    """A group's summary depends on the names @stage is imported under (an import further down
    can change them): one read under other names is not used."""
    source = module(400)
    memo = GroupMemo()
    summarise(source, "/project/pipeline.py", memo)
    renamed = source + "from pivot import stage as step\nimport pivot.stage as ps\n"
    again = GroupMemo(memo.new)
    assert summarise(renamed, "/project/pipeline.py", again) == summarise(renamed, "/project/pipeline.py")
    assert again.read > 1


def test_a_stage_fails_naming_its_line_after_an_edit_above_it_added_lines(project: Project) -> None:
    """The compiled groups after an edit that added lines are remembered ones, moved down."""
    source = module(400, tail=FAILING_LAST)
    project.pipeline(source)
    project.write("data/in.txt", "x\n")
    first = project.pivot("run", "last", check=False)
    assert f'pipeline.py", line {source.count(chr(10))}, in last' in first.stdout + first.stderr
    edited = _edited(source, 100, 5)
    project.pipeline(edited)
    result = project.pivot("run", "last", check=False)
    assert f'pipeline.py", line {edited.count(chr(10))}, in last' in result.stdout + result.stderr


def test_a_large_pipeline_touched_keeps_its_summary_and_an_edit_reads_one_group(project: Project) -> None:
    """A new mtime on the same bytes (a checkout back and forth) reuses the summary; an edit
    summarises again, and the stage whose function changed is the one that runs."""
    source = module(400)
    path = project.pipeline(source)
    project.write("data/in.txt", "x\n")
    project.pivot("run")
    memos = list((project.root / ".pivot" / "tmp" / "pycache").glob("summary-*"))
    assert len(memos) == 1
    written = memos[0].stat().st_mtime_ns
    os.utime(path, ns=(time.time_ns() + 5 * 10**9,) * 2)
    assert "up to date" in project.pivot("status").stdout.splitlines()[-1]
    assert memos[0].stat().st_mtime_ns == written  # not summarised again
    project.pipeline(_edited(source, 200, 2))
    status = project.pivot("status").stdout
    assert "s200" in status and "s201" not in status and "s199" not in status
    assert memos[0].stat().st_mtime_ns != written
