"""Executors run stages. The runner talks to them through a small interface (pivot/executor/
base.py): submit a task, get a future of its result, and read the executor's `capabilities`,
so a local process pool, an in-process runner or a distributed engine are interchangeable.

    base.py           the interface: StageTask, OutSpec, StageResult, Capabilities, Executor;
                      available_cpus, check_kind (KINDS)
    workers.py        PoolExecutor: the local pool of warm worker processes, one pipe each
    local.py          the worker's set-up, Solo (a stage in a process of its own), the inline
                      executor, call_stage
    factory.py        make_executor / executor_factory: an executor from the `executor:` config
    dask_settings.py  the `executor:` mapping resolved and checked (no cluster needed)
    dask_client.py    DaskExecutor, the half on this machine (imports distributed when built)
    dask_worker.py    the half that runs on a Dask worker
    dask_transfer.py  objects between a cache and the shared remote, for both halves

Importing this package imports neither dask, distributed nor cloudpickle, and none of its
modules until a name from one is first asked for (PEP 562): a run with every stage up to date
starts no executor and needs only `base`; a local run never loads the Dask settings
(dask_settings.py, dask_cluster.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pivot.executor.base import (
        KINDS,
        LOCAL,
        Capabilities,
        Executor,
        OutSpec,
        StageResult,
        StageTask,
        available_cpus,
        check_kind,
    )
    from pivot.executor.factory import executor_factory, make_executor
    from pivot.executor.local import InlineExecutor, call_stage, execute
    from pivot.executor.workers import PoolExecutor

# Each name this package exports -> the module of the package that defines it.
_HOMES = {
    **dict.fromkeys(("KINDS", "LOCAL", "Capabilities", "Executor", "OutSpec", "StageResult", "StageTask",
                     "available_cpus", "check_kind"), "base"),
    **dict.fromkeys(("executor_factory", "make_executor"), "factory"),
    **dict.fromkeys(("InlineExecutor", "call_stage", "execute"), "local"),
    "PoolExecutor": "workers",
}

__all__ = [
    "KINDS",
    "LOCAL",
    "Capabilities",
    "Executor",
    "InlineExecutor",
    "OutSpec",
    "PoolExecutor",
    "StageResult",
    "StageTask",
    "available_cpus",
    "call_stage",
    "check_kind",
    "execute",
    "executor_factory",
    "make_executor",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
