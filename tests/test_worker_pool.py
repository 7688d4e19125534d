"""The local worker pool (pivot/executor/workers.py): workers that start in the project folder
do not let the project's own modules stand in for the standard library's."""

from __future__ import annotations

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
