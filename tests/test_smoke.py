"""A first end-to-end pass through the CLI: run, skip, restore."""

from __future__ import annotations

from conftest import Project


def test_second_run_does_nothing(project: Project) -> None:
    project.write("data/raw.txt", "hello\n")
    project.pipeline('''
        from pivot import stage

        @stage(deps=["data/raw.txt"], outs=["data/upper.txt"])
        def upper():
            text = open("data/raw.txt").read()
            open("data/upper.txt", "w").write(text.upper())
    ''')
    first = project.pivot("run")
    assert "upper: running" in first.stdout
    assert project.read("data/upper.txt") == "HELLO\n"
    second = project.pivot("run")
    assert "upper: running" not in second.stdout
    assert "nothing to run" in second.stdout
