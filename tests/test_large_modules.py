"""A large pipeline module (thousands of stages) is compiled and summarised one group of
top-level statements at a time, never as one syntax tree: the same code, lines and digests as
reading it whole, at a fraction of the memory."""

from __future__ import annotations

import gc
import importlib.util
import textwrap
import tracemalloc
import types
import warnings
from pathlib import Path

import pytest
from conftest import Project

from pivot.fingerprint.summary import summarise
from pivot.importing import GROUPED, compile_chunks, compile_source, loader_for

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


def test_a_stage_of_a_large_pipeline_fails_naming_its_line(project: Project) -> None:
    """The traceback of a stage near the end of a large module, and its fingerprint (keyed by
    the function's first line), are those of the whole file."""
    tail = textwrap.dedent('''\
        @stage(deps=["data/in.txt"], outs=["data/last.txt"])
        def last():
            raise ValueError("from the last stage")
        ''')
    source = module(400, tail=tail)
    project.pipeline(source)
    project.write("data/in.txt", "x\n")
    result = project.pivot("run", "last", check=False)
    line = source.count("\n")
    assert f'pipeline.py", line {line}, in last' in result.stdout + result.stderr
    project.pipeline(source.replace('raise ValueError("from the last stage")', 'open("data/last.txt", "w")'))
    project.pivot("run", "last")
    assert "up to date" in project.pivot("status", "last").stdout
