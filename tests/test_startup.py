"""Start-up of a no-op `pivot status` and `pivot run` (docs/performance.md, "Start-up"): they
import nothing they do not use. PyYAML is not imported when every lock comes from the lock memo
and the configuration from its memo (`.pivot/tmp/pycache/config.json`, by the files' exact bytes);
tempfile, shutil, `pivot track`'s module and the remote code are not imported at all. The memo
must never hide a change: the other tests edit the configuration after it was remembered."""

from __future__ import annotations

import os
import stat
import subprocess
import time

from conftest import PIVOT, Project
from test_fast_paths import TWO

# Never imported by a no-op status: what it does not use.
NOT_BY_STATUS = ("yaml", "tempfile", "shutil", "random", "pivot.ops.track", "pivot.verify", "pivot.remote", "s3fs",
                 "fsspec", "botocore", "aiobotocore", "pydantic", "ruamel", "dask", "distributed")
# Nor by a no-op run (which does import shutil and subprocess, for its executor and backups).
NOT_BY_RUN = ("yaml", "tempfile", "random", "pivot.remote", "s3fs", "fsspec", "botocore",
              "aiobotocore", "pydantic", "ruamel", "dask", "distributed")


def imported(project: Project, *args: str) -> set[str]:
    """Every module the real `pivot ARGS` imported (python -X importtime's report)."""
    proc = subprocess.run([PIVOT, *args], cwd=project.root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2}


def heavy(found: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in found if any(m == n or m.startswith(n + ".") for n in names))


def up_to_date(project: Project) -> Project:
    project.write("data/raw.txt", "hello\n")
    project.pipeline(TWO)
    project.pivot("run")
    time.sleep(2.1)  # a lock younger than 2 s is never remembered by its stat
    assert "all 2 stage(s) up to date" in project.pivot("status").stdout  # remembers locks and config
    return project


def test_a_no_op_status_and_run_import_only_what_they_use(project: Project) -> None:
    up_to_date(project)
    found = imported(project, "status")
    assert "pivot.status" in found  # the report is real
    assert heavy(found, NOT_BY_STATUS) == []
    assert heavy(imported(project, "run"), NOT_BY_RUN) == []
    # A default remote (status consults its local index): still no remote code, once the
    # changed configuration is remembered by the status after the edit.
    project.pivot("remote", "add", "store", "s3://bucket/prefix", "--default")
    project.pivot("status")
    assert heavy(imported(project, "status"), NOT_BY_STATUS) == []


def test_the_configuration_is_read_again_when_either_file_changes(project: Project) -> None:
    up_to_date(project)
    config = project.read(".pivot/config.yaml")
    project.write(".pivot/config.yaml", config.replace("link: auto", "link: bogus"))
    assert "bogus" in project.pivot("status", check=False).stderr
    project.write(".pivot/config.yaml", config)
    assert "all 2 stage(s) up to date" in project.pivot("status").stdout
    project.write(".pivot/config.local.yaml", "cache:\n  link: nonsense\n")
    assert "nonsense" in project.pivot("status", check=False).stderr
    project.write(".pivot/config.local.yaml", "cache:\n  link: [\n")
    assert "config.local.yaml:" in project.pivot("status", check=False).stderr  # a YAML error, with its line
    (project.root / ".pivot/config.local.yaml").unlink()
    assert "all 2 stage(s) up to date" in project.pivot("status").stdout


def test_a_configuration_json_cannot_hold_is_still_read_right(project: Project) -> None:
    up_to_date(project)
    # A date and a non-string key: not remembered (JSON would change them), parsed every time.
    project.write(".pivot/config.local.yaml", "since: 2024-01-01\n1: one\ncache:\n  link: copy\n")
    for _ in range(2):
        assert "all 2 stage(s) up to date" in project.pivot("status").stdout
    project.write(".pivot/config.local.yaml", "since: 2024-01-01\ncache:\n  link: bogus\n")
    assert "bogus" in project.pivot("status", check=False).stderr


def test_a_status_right_after_a_run_parses_no_lock_file(project: Project) -> None:
    """The locks a run just wrote are remembered as it writes them (racy: a matching stat is
    confirmed by the bytes' hash), so the status right after the run imports no YAML parser;
    params.yaml is remembered by its bytes like the configuration."""
    project.write("data/raw.txt", "hello\n")
    project.write("params.yaml", "# no sections yet\n")
    project.pipeline(TWO)
    project.pivot("run")
    found = imported(project, "status")
    assert "pivot.status" in found
    assert heavy(found, ("yaml", "ruamel")) == []
    assert "all 2 stage(s) up to date" in project.pivot("status").stdout


def test_a_no_op_status_with_tracked_data_reads_its_records_without_yaml(project: Project) -> None:
    """Records as `pivot track` writes them are read without PyYAML (pivot.tracked.canonical_text);
    one edited by hand into other YAML is read with it, and means the same."""
    up_to_date(project)
    project.write("images/one.txt", "one\n")
    project.pivot("track", "images")
    found = imported(project, "status")
    assert "pivot.verify" in found  # tracked data was checked
    assert heavy(found, tuple(n for n in NOT_BY_STATUS if n != "pivot.verify")) == []
    record = project.read(".pivot/tracked/images.yaml")
    project.write(".pivot/tracked/images.yaml", record.replace("path: images", "path: 'images'  # quoted"))
    assert "yaml" in imported(project, "status")
    assert "all 2 stage(s) up to date" in project.pivot("status").stdout
    (project.root / "images/one.txt").write_text("changed\n")
    assert "modified: run 'pivot track images' to record it" in project.pivot("status").stdout


def test_a_first_run_after_pivot_init_imports_no_pyyaml(project: Project) -> None:
    # The configuration `pivot init` wrote is known without parsing it, and locks are written
    # without PyYAML's resolver: neither `pivot` nor its workers import PyYAML (10 ms idle, up to
    # ~100 ms under load, of a small pipeline's first run).
    project.write("data/raw.txt", "hello\n")
    project.pipeline(TWO)
    found = imported(project, "run")
    assert "pivot.run" in found  # the report is real
    assert heavy(found, ("yaml",)) == []
    assert project.exists(".pivot/stages/final.lock")


WIDE = '''
from pivot import stage


@stage(deps=["data/raw.txt"], outs=["data/a.txt"])
def a():
    open("data/a.txt", "w").write(open("data/raw.txt").read() + "a")


@stage(deps=["data/raw.txt"], outs=["data/b.txt"])
def b():
    print("x" * 200_000)  # an answer longer than a pipe holds: read in parts
    open("data/b.txt", "w").write(open("data/raw.txt").read() + "b")


@stage(deps=["data/a.txt", "data/b.txt"], outs=["data/c.txt"])
def c():
    open("data/c.txt", "w").write(open("data/a.txt").read() + open("data/b.txt").read())
'''


def test_a_first_run_imports_no_multiprocessing_tempfile_subprocess_or_dask_settings(project: Project) -> None:
    # docs/performance.md, "A first run": the pool's pipes carry length-prefixed messages read with
    # select.poll (multiprocessing, socket and queues are not imported), temporaries are named by
    # Pivot (no tempfile, which imports random and shutil), nvidia-smi is asked only when it exists,
    # and the Dask settings load only for a Dask run. Forked workers inherit the report's setting.
    project.write("data/raw.txt", "hello\n")
    project.pipeline(WIDE)
    found = imported(project, "run", "-j", "2")
    assert "pivot.run" in found and "pivot.executor.workers" in found  # the report is real
    assert heavy(found, ("multiprocessing", "tempfile", "subprocess", "concurrent.futures.process",
                         "pivot.executor.dask_settings", "pivot.executor.dask_cluster")) == []
    assert project.read("data/c.txt") == "hello\nahello\nb"
    assert project.pivot("logs", "b").stdout.count("x") == 200_000


def test_the_files_a_first_run_writes_have_the_usual_mode_and_a_rewrite_keeps_a_changed_one(
        project: Project) -> None:
    # Locks and run records are made with their mode at once (no fchmod of a private temporary).
    project.write("data/raw.txt", "hello\n")
    project.pipeline(WIDE)
    project.pivot("run")
    mask = os.umask(0o022)
    os.umask(mask)
    lock = project.root / ".pivot/stages/c.lock"
    records = list((project.root / ".pivot/cache/runs").rglob("*"))
    assert stat.S_IMODE(lock.stat().st_mode) == 0o666 & ~mask
    assert [stat.S_IMODE(r.stat().st_mode) for r in records if r.is_file()] == [0o666 & ~mask] * 3
    lock.chmod(0o640)
    project.write("data/raw.txt", "changed\n")
    project.pivot("run")
    assert stat.S_IMODE(lock.stat().st_mode) == 0o640
    assert "changed" in project.read("data/c.txt")
