"""Executors built from configuration: the one place that knows which class each kind is."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pivot.executor.base import Executor, check_kind
from pivot.executor.workers import PoolExecutor

if TYPE_CHECKING:
    from pivot.cache import Cache
    from pivot.project import Project


def executor_factory(kind: str, options: Mapping[str, Any], jobs: int, *, root: Path, cache: Cache,
                     project: Project) -> Callable[[], Executor]:
    """Check `kind` and `options` now (everything that can be checked without a cluster, before
    anything changes); build the executor when the returned function is called, which the runner
    does when the first stage must run (a run where everything is up to date needs no cluster).
    `jobs`: worker processes of the local pool; a Dask executor offers its own `slots`."""
    if check_kind(kind) == "local":
        return lambda: PoolExecutor(jobs, root)
    from pivot.executor.dask_settings import resolve_settings  # lazy: a local run needs none of it

    settings = resolve_settings(project, options)

    def connect() -> Executor:
        from pivot.executor.dask_client import DaskExecutor  # lazy: imports distributed

        return DaskExecutor(settings, root, cache)

    return connect


def make_executor(kind: str, options: Mapping[str, Any], jobs: int, *, root: Path, cache: Cache,
                  project: Project) -> Executor:
    """The executor `kind` ("local" or "dask"), built now; see executor_factory."""
    return executor_factory(kind, options, jobs, root=root, cache=cache, project=project)()
