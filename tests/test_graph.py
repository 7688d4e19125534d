"""The stage graph (pivot/graph.py) links a dep to the stages that produce it, a folder above it
or files inside it, and refuses outputs inside other outputs. The stages are defined in the
reverse of the order they must run in, so only the graph can put them right."""

from __future__ import annotations

from conftest import Project


def test_a_dep_inside_an_output_folder_runs_after_the_stage_that_makes_the_folder(project: Project) -> None:
    project.pipeline("""
        import os
        from pivot import stage


        @stage(deps=["made/deep/f.txt"], outs=["b.txt"])
        def b():
            open("b.txt", "w").write(open("made/deep/f.txt").read() + "!")


        @stage(outs=["made"])
        def a():
            os.makedirs("made/deep", exist_ok=True)
            open("made/deep/f.txt", "w").write("a")
    """)
    project.pivot("run")
    assert project.read("b.txt") == "a!"


def test_a_folder_dep_runs_after_every_stage_with_an_output_inside_it(project: Project) -> None:
    project.pipeline("""
        import os
        from pivot import stage


        @stage(deps=["d"], outs=["listing.txt"])
        def c():
            open("listing.txt", "w").write(",".join(sorted(os.listdir("d/e")) + sorted(os.listdir("d"))))


        @stage(outs=["d/e/one.txt"])
        def one():
            os.makedirs("d/e", exist_ok=True)
            open("d/e/one.txt", "w").write("1")


        @stage(outs=["d/two.txt"])
        def two():
            os.makedirs("d", exist_ok=True)
            open("d/two.txt", "w").write("2")
    """)
    project.pivot("run")
    assert project.read("listing.txt") == "one.txt,e,two.txt"


def test_an_output_inside_another_output_is_refused(project: Project) -> None:
    project.pipeline("""
        from pivot import stage


        @stage(outs=["out/sub/x.txt"])
        def inner():
            pass


        @stage(outs=["out"])
        def outer():
            pass
    """)
    done = project.pivot("status", check=False)
    assert done.returncode == 1, done
    assert "output 'out/sub/x.txt' of stage 'inner' is inside output 'out' of stage 'outer'; outputs may not nest" \
        in done.stdout + done.stderr, done
