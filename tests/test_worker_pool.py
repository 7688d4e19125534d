"""The local worker pool (pivot/executor/workers.py): workers that start in the project folder
do not let the project's own modules stand in for the standard library's."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Project


def test_a_project_module_named_like_the_standard_library_leaves_the_workers_alone(project: Project) -> None:
    # A helper module called logging.py at the project root: a worker that put the project folder
    # first on sys.path (loky's, started with -m) imported it instead of the standard library's
    # and died with a traceback before running anything.
    project.write("logging.py", "def setup():\n    pass\n")
    project.pipeline("""
        from pivot import stage


        @stage(outs=["a.txt"])
        def a():
            with open("a.txt", "w") as f:
                f.write("a")


        @stage(deps=["a.txt"], outs=["b.txt"])
        def b():
            with open("b.txt", "w") as f:
                f.write(open("a.txt").read() + "!")
    """)
    result = project.pivot("run", "-j", "2")
    assert "2 ran" in result.stdout
    assert "Traceback" not in result.stderr
    assert project.read("b.txt") == "a!"


WHERE = """
    import os
    import sys
    {extra}
    from pivot import stage


    def where(name):
        # a worker forked from `pivot` has its command-line modules (click) loaded already
        with open(name, "w") as f:
            f.write(f"{{os.getpid()}} {{os.getppid()}} {{'click' in sys.modules}} {{MODULE_PID}}")


    MODULE_PID = os.getpid()  # the process that ran this module's top level


    @stage(outs=["a.txt"])
    def a():
        where("a.txt")


    @stage(outs=["b.txt"])
    def b():
        where("b.txt")
"""


def test_a_first_runs_workers_are_forked_from_pivot_and_import_the_pipeline_themselves(project: Project) -> None:
    # A worker forked from the `pivot` process is ready without starting Python and importing
    # Pivot again (issue #19: most of a small pipeline's first run); it still runs the pipeline
    # module's top level itself, as a started worker does, and runs apart from `pivot`.
    project.pipeline(WHERE.format(extra=""))
    result = project.pivot("run", "-j", "2")
    assert "2 ran" in result.stdout
    assert result.stdout.count("a: done") == 1  # nothing `pivot` had buffered is written twice
    for name in ("a.txt", "b.txt"):
        pid, ppid, forked, module_pid = project.read(name).split()
        assert forked == "True", "the worker was started afresh instead of forked"
        assert module_pid == pid, "the worker used the pipeline module `pivot` imported"
        assert ppid != pid
    assert "Traceback" not in result.stderr


def test_workers_are_started_afresh_when_pivot_runs_other_threads(project: Project) -> None:
    # A thread started by the pipeline's import may hold a lock at the moment of a fork, and the
    # forked worker would wait for it for good: then the workers are new interpreters, as before.
    project.pipeline(WHERE.format(extra=(
        "import threading, time\n"
        "    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()")))
    result = project.pivot("run", "-j", "2")
    assert "2 ran" in result.stdout
    for name in ("a.txt", "b.txt"):
        pid, _ppid, forked, module_pid = project.read(name).split()
        assert forked == "False"
        assert module_pid == pid


def test_a_worker_does_not_hold_the_project_lock_and_keeps_what_the_pipeline_opened(project: Project) -> None:
    # The project lock goes with `pivot` (a worker left behind must not hold it); a file the
    # pipeline's import opened (a logging file here) is still usable in the worker, as it is in
    # one that imported the pipeline afresh.
    project.pipeline("""
        import logging
        import os

        from pivot import stage

        logging.basicConfig(filename="pipeline.log", level=logging.INFO)


        @stage(outs=["fds.txt"])
        def fds():
            logging.info("from the stage")
            targets = []
            for fd in os.listdir("/proc/self/fd"):
                try:
                    targets.append(os.readlink(f"/proc/self/fd/{fd}"))
                except OSError:
                    pass
            with open("fds.txt", "w") as f:
                f.write("\\n".join(targets))
    """)
    result = project.pivot("run")
    assert "1 ran" in result.stdout
    assert not [t for t in project.read("fds.txt").splitlines() if t.endswith("run.lock")]
    assert "from the stage" in project.read("pipeline.log")


def test_forked_workers_draw_numpys_global_random_numbers_afresh(project: Project, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # An installed library's module stays as `pivot` imported it in a forked worker. numpy's global
    # random state would then be the same in every worker of a run (two stages drawing unseeded
    # numbers at once would draw the same ones); as in a worker started afresh, it is drawn anew.
    # A stand-in for numpy outside the project (its state: random bytes drawn at import or seed()).
    fake = tmp_path / "site" / "numpy"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("from numpy import random\n")
    (fake / "random.py").write_text("import os\nSTATE = os.urandom(8).hex()\n\n\ndef seed(value=None):\n"
                                    "    global STATE\n    STATE = os.urandom(8).hex()\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    project.pipeline("""
        import os
        import time

        import numpy
        from pivot import stage


        def draw(name):
            time.sleep(0.5)  # both stages at once: one per worker
            with open(name, "w") as f:
                f.write(f"{os.getpid()} {numpy.random.STATE}")


        @stage(outs=["a.txt"])
        def a():
            draw("a.txt")


        @stage(outs=["b.txt"])
        def b():
            draw("b.txt")
    """)
    result = project.pivot("run", "-j", "2")
    assert "2 ran" in result.stdout, result.stdout + result.stderr
    (pid_a, state_a), (pid_b, state_b) = (project.read(n).split() for n in ("a.txt", "b.txt"))
    assert pid_a != pid_b, "both stages ran in one worker: nothing to compare"
    assert state_a != state_b, "two forked workers drew the same unseeded numbers"
