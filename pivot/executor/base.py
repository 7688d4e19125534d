"""What the runner and an executor say to each other: a task in, a future of its result out,
and the executor's capabilities, declared as data.

A task carries everything a worker needs: the stage function (pickled by reference, so the
worker imports the pipeline module once and keeps it warm), its params, and where its outputs
go. The worker runs the function with stdout/stderr captured, checks the declared outputs
exist, and stores them in the cache (hashing happens in parallel this way). The parent
computes fingerprints, decides, and writes lock files.

An executor whose workers share nothing with this machine (`Capabilities.remote`, see
pivot/executor/dask_client.py) also gets the deps' hashes and the code fingerprint in the task,
and returns results whose outputs are not in the workspace yet (`StageResult.placed` False):
the runner then brings them in from the cache and writes metrics from `StageResult.inline`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pivot.errors import ProjectError
from pivot.limits import DEFAULT, Limits
from pivot.records import FileMemoRow, OutputKind, PathRecord

if TYPE_CHECKING:
    from concurrent.futures import Future

    from pivot.fingerprint import Fingerprint

KINDS = ("local", "dask")  # the executors `executor.kind` may name


def check_kind(kind: str) -> str:
    """`kind`, when it names an executor; else why not, for the user."""
    if kind not in KINDS:
        raise ProjectError(f".pivot/config.yaml: executor.kind is {kind!r}; use 'local' or 'dask'")
    return kind


@dataclass(frozen=True)
class Capabilities:
    """What an executor offers, so the runner never has to probe it."""

    # Workers share nothing with this machine: tasks carry deps by hash, results come back as
    # hashes (outputs not placed in the workspace), and the executor retries lost workers itself.
    remote: bool = False
    # Stages it runs at once, when it knows (a cluster's worker count); None: as many as asked.
    slots: int | None = None
    # Outputs come back into the local cache (False: --no-download, they stay on the remote).
    downloads: bool = True
    # A cluster's workers, each as the resources it offers (("GPU", 1.0), ...), to check that some
    # worker can run each stage before the run starts; None: not a cluster (or not known).
    workers: tuple[tuple[tuple[str, float], ...], ...] | None = None
    # Runs a task's `then` stages after it on the same worker (pivot/speculate.py).
    batches: bool = False


LOCAL = Capabilities()


@dataclass(frozen=True)
class OutSpec:
    path: str
    kind: OutputKind
    cached: bool


@dataclass(frozen=True)
class StageTask:
    name: str
    func: Callable[..., Any]
    params: Any  # the params instance, or None
    root: Path
    outs: tuple[OutSpec, ...] = ()
    cache_dir: Path | None = None
    link: str = "auto"
    log_path: Path | None = None
    # For remote executors only (the local pool reads the workspace itself):
    fingerprint: Fingerprint | None = None
    deps: tuple[PathRecord, ...] = ()  # each dep's hash, as the lock will record it
    manifests: tuple[tuple[str, bytes], ...] = ()  # hash -> manifest bytes of directory deps
    inputs: tuple[PathRecord, ...] = ()  # IncrementalOuts to start from (workspace or cache)
    limits: Limits = DEFAULT  # resources (a cluster's worker resources) and timeout
    env: tuple[tuple[str, str], ...] = ()  # set in the stage's process (CUDA_VISIBLE_DEVICES), locally
    # Stages that may run right after this one on the same worker, speculatively (pivot/speculate.py):
    # their answers are used only if the runner submits them later with the same inputs.
    then: tuple[StageTask, ...] = ()


@dataclass(frozen=True)
class StageResult:
    name: str
    ok: bool
    duration: float
    error: str | None = None  # the user's traceback, or why the stage is refused
    output: str = ""  # captured stdout, stderr and logging
    records: tuple[PathRecord, ...] = ()
    memo: tuple[FileMemoRow, ...] = field(default=())
    pid: int = 0
    # Remote executors: outputs are in the cache (or left on the remote), not in the workspace.
    placed: bool = True
    inline: tuple[tuple[str, bytes], ...] = ()  # path -> bytes of outputs that are not cached (metrics)
    manifests: tuple[tuple[str, bytes], ...] = ()  # hash -> manifest of directory outputs
    refused: str | None = None  # the worker cannot be trusted with this stage: stop the run
    timings: tuple[tuple[str, float], ...] = ()  # (step, seconds): where a remote stage spent its time
    worker: str = ""
    timed_out: bool = False  # stopped at its timeout (the error says so)
    rescheduled: bool = False  # a worker was lost while running it; it ran again on another one


class Executor(Protocol):
    """Runs stages: `submit` one, get a future of its result. `shutdown(kill=True)` stops the
    workers now (Ctrl-C, a dead worker); without `kill` it waits for background work."""

    @property
    def capabilities(self) -> Capabilities: ...

    def submit(self, task: StageTask) -> Future[StageResult]: ...

    def shutdown(self, kill: bool = False) -> None: ...


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:
        count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)
