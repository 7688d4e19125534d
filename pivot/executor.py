"""Executors run one stage's function. The runner talks to them through this small interface,
so a process pool or a distributed engine can replace the in-process one."""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol


@dataclass(frozen=True)
class StageTask:
    name: str
    func: Callable[..., Any]
    params: Any  # the params instance, or None
    root: Path


@dataclass(frozen=True)
class StageResult:
    name: str
    ok: bool
    duration: float
    error: str | None = None  # the user's traceback, formatted


class Executor(Protocol):
    def run(self, task: StageTask) -> StageResult: ...


def call_stage(task: StageTask) -> StageResult:
    """Run a stage function with the project root as working directory."""
    start = time.perf_counter()
    os.chdir(task.root)
    try:
        if task.params is None:
            task.func()
        else:
            task.func(task.params)
    except Exception as exc:
        return StageResult(task.name, False, time.perf_counter() - start, format_user_traceback(exc))
    finally:
        os.chdir(task.root)
    return StageResult(task.name, True, time.perf_counter() - start)


def format_user_traceback(exc: BaseException) -> str:
    """The traceback from the stage function down, without Pivot's own frames."""
    tb = exc.__traceback__
    here = os.path.abspath(__file__)
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) == here:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()


class InProcessExecutor:
    """Runs stages one at a time in this process."""

    def run(self, task: StageTask) -> StageResult:
        return call_stage(task)
