"""Shared helpers for the benchmark scripts: timing a command, summary statistics,
locating executables, and writing results.

Only public tools are used: the wall-clock time of each command is taken with
``time.perf_counter`` around ``subprocess``; peak memory comes from the kernel's
``wait4`` resource usage for the child (the same figure ``/usr/bin/time -v``
prints as "Maximum resident set size").
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
STDERR_TAIL_CHARS = 800


@dataclass
class CmdResult:
    """One timed execution of a command."""

    argv: list[str]
    seconds: float
    returncode: int | None  # None: killed by the timeout
    max_rss_kib: int
    stdout: str
    stderr: str
    cpu_seconds: float = 0.0  # user + system time of the command and the processes it waited for

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def failure(self) -> str:
        """A one-paragraph description of why the command did not succeed."""
        what = f"timed out after {self.seconds:.0f}s" if self.returncode is None else f"exit code {self.returncode}"
        tail = (self.stderr.strip() or self.stdout.strip())[-STDERR_TAIL_CHARS:]
        return f"`{' '.join(self.argv)}` {what}" + (f": {tail}" if tail else "")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_timed(
    argv: Sequence[str],
    cwd: Path | str | None = None,
    timeout: float = 900.0,
    env: dict[str, str] | None = None,
) -> CmdResult:
    """Run ``argv`` once; return wall time, exit code, peak RSS and output.

    The command runs in its own process group so that a timeout kills it and
    every worker it started.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(
                list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, start_new_session=True,
            )
        except OSError as exc:
            return CmdResult(list(argv), 0.0, 127, 0, "", str(exc))
        timed_out = threading.Event()

        def on_timeout() -> None:
            timed_out.set()
            _kill_group(proc)

        timer = threading.Timer(timeout, on_timeout)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        _kill_group(proc)  # leftovers (e.g. detached workers) must not skew the next sample
        out.seek(0)
        err.seek(0)
        return CmdResult(
            argv=list(argv),
            seconds=seconds,
            returncode=None if timed_out.is_set() else proc.returncode,
            max_rss_kib=usage.ru_maxrss,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            cpu_seconds=usage.ru_utime + usage.ru_stime,
        )


@dataclass
class Measurement:
    """A named series of samples for one tool and configuration."""

    tool: str
    metric: str
    config: dict[str, Any] = field(default_factory=dict)
    samples: list[float] = field(default_factory=list)
    max_rss_kib: int = 0
    cpu_samples: list[float] = field(default_factory=list)  # CPU seconds per sample (see CmdResult)
    status: str = "ok"  # ok | failed | skipped
    error: str = ""

    def add(self, result: CmdResult) -> bool:
        """Record a sample; on failure mark the measurement failed and return False."""
        if not result.ok:
            self.fail(result.failure())
            return False
        self.samples.append(result.seconds)
        self.cpu_samples.append(result.cpu_seconds)
        self.max_rss_kib = max(self.max_rss_kib, result.max_rss_kib)
        return True

    def fail(self, error: str) -> None:
        self.status = "failed"
        self.error = error

    def skip(self, reason: str) -> None:
        self.status = "skipped"
        self.error = reason

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples and self.status == "ok" else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.samples and self.status == "ok":
            data.update(median=self.median, min=min(self.samples), max=max(self.samples))
        return data


def fmt_seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def fmt_measurement(m: Measurement | None) -> str:
    """Median with (min–max), or the status when there is no number."""
    if m is None:
        return "—"
    if m.status != "ok" or not m.samples:
        return m.status
    text = fmt_seconds(statistics.median(m.samples))
    if len(m.samples) > 1:
        text += f" ({fmt_seconds(min(m.samples))}–{fmt_seconds(max(m.samples))})"
    return text + f" n={len(m.samples)}"


def fmt_ratio(numerator: Measurement | None, denominator: Measurement | None) -> str:
    if numerator is None or denominator is None:
        return "—"
    a, b = numerator.median, denominator.median
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.1f}×"


def failure_notes(results: Sequence[Measurement]) -> str:
    """A markdown list of the failed measurements and why, or nothing."""
    notes = [f"- {m.tool} {m.metric} {m.config or ''}: {m.error}".replace("\n", "\n    ")
             for m in results if m.status == "failed"]
    return "\n\nFailures:\n" + "\n".join(notes) if notes else ""


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def resolve_executable(option: str | None, env_var: str, default: str) -> str | None:
    """The executable from an option, else ``$env_var``, else ``default`` on PATH."""
    candidate = option or os.environ.get(env_var) or default
    if os.sep in candidate:
        path = Path(candidate).expanduser()
        return str(path.absolute()) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(candidate)


def tool_version(argv: Sequence[str]) -> str:
    try:
        result = run_timed(argv, timeout=60)
    except OSError as exc:
        return f"unknown ({exc})"
    text = (result.stdout or result.stderr).strip().splitlines()
    return text[0] if result.ok and text else "unknown"


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_results(prefix: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


def tool_env() -> dict[str, str]:
    """Environment for the tools: no analytics, a fixed git identity, no pager."""
    env = dict(os.environ)
    env.update(
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid",
        GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid",
        GIT_PAGER="cat", PAGER="cat",
    )
    return env
