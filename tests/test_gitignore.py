"""The .gitignore Pivot edits (a managed block of cached outputs): whatever the user's file holds,
`pivot run` either keeps their lines byte for byte or refuses with one line, changing nothing."""

from __future__ import annotations

import os
import subprocess
import textwrap

import pytest
from conftest import Project
from test_errors import refused

PIPELINE = textwrap.dedent("""\
    from pivot import stage

    @stage(deps=["in.txt"], outs=["out.txt"])
    def copy():
        open("out.txt", "w").write(open("in.txt").read())
    """)
BEGIN = b"# >>> pivot: cached outputs (managed by pivot, do not edit this block)"


def ready(project: Project) -> None:
    project.pipeline(PIPELINE)
    project.write("in.txt", "x\n")


def ignored(project: Project, path: str) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=project.root).returncode == 0


HUGE = b"".join(b"/generated/file-%07d.tmp\n" % i for i in range(200_000))  # about 5 MiB

CASES = {
    "invalid-utf8": b"caf\xe9.txt\n*.log\n",
    "nul-bytes": b"a\x00b\n*.log\n",
    "crlf": b"*.log\r\nbuild/\r\n",
    "no-final-newline": b"*.log\nbuild/",
    "crlf-no-final-newline": b"*.log\r\nbuild/",
    "lone-cr": b"*.log\rstill the same line\n",
    "huge": HUGE,
}


@pytest.mark.parametrize("content", CASES.values(), ids=CASES.keys())
def test_the_users_lines_are_kept_byte_for_byte(project: Project, content: bytes) -> None:
    ready(project)
    (project.root / ".gitignore").write_bytes(content)
    project.pivot("run")
    after = (project.root / ".gitignore").read_bytes()
    eol = b"\r\n" if content.split(b"\n", 1)[0].endswith(b"\r") else b"\n"
    user = content if content.endswith(b"\n") else content + eol
    assert after == user + eol + BEGIN + eol + b"/out.txt" + eol + b"# <<< pivot" + eol
    assert ignored(project, "out.txt")
    if b"*.log\n" in content or b"*.log\r\n" in content:
        assert ignored(project, "x.log")  # the user's own patterns still work
    project.write("in.txt", "y\n")
    project.pivot("run")
    assert (project.root / ".gitignore").read_bytes() == after  # a second edit changes nothing


def test_lines_after_the_block_are_kept_too(project: Project) -> None:
    ready(project)
    project.pivot("run")
    path = project.root / ".gitignore"
    path.write_bytes(b"caf\xe9\r\n" + path.read_bytes() + b"after\x00 the block")
    project.write("pipeline.py", PIPELINE.replace('"out.txt"', '"out2.txt"'))
    project.pivot("run")
    assert path.read_bytes() == (b"caf\xe9\r\n\r\n" + BEGIN + b"\r\n/out2.txt\r\n# <<< pivot\r\n"
                                 + b"after\x00 the block")


def test_a_folder_named_gitignore_is_refused(project: Project) -> None:
    ready(project)
    (project.root / ".gitignore").mkdir()
    (project.root / ".gitignore" / "keep").write_text("k\n")
    line = refused(project, "run", names=(".gitignore", "folder"))
    assert "move it away" in line and not project.exists("out.txt")


def test_a_gitignore_over_the_size_limit_is_refused(project: Project) -> None:
    ready(project)
    with open(project.root / ".gitignore", "wb") as f:
        f.truncate(64 * 1024 * 1024 + 1)  # sparse: cheap to make
    refused(project, "run", names=(".gitignore", "MiB"))


def test_a_linked_gitignore_is_refused(project: Project) -> None:
    ready(project)
    project.write("ignores.txt", "*.log\n")
    os.symlink("ignores.txt", project.root / ".gitignore")
    refused(project, "run", names=(".gitignore", "symbolic link"))
