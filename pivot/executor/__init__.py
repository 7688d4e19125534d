"""Executors run stages. The runner talks to them through a small interface (pivot/executor/
base.py): submit a task, get a future of its result, and read the executor's `capabilities`,
so a local process pool, an in-process runner or a distributed engine are interchangeable.

    base.py           the interface: StageTask, OutSpec, StageResult, Capabilities, Executor
    workers.py        PoolExecutor: the local pool of warm worker processes, one pipe each
    local.py          the worker's set-up, Solo (a stage in a process of its own), the inline
                      executor, call_stage, available_cpus
    factory.py        make_executor / executor_factory: an executor from the `executor:` config
    dask_settings.py  the `executor:` mapping resolved and checked (no cluster needed)
    dask_client.py    DaskExecutor, the half on this machine (imports distributed when built)
    dask_worker.py    the half that runs on a Dask worker
    dask_transfer.py  objects between a cache and the shared remote, for both halves

Importing this package imports neither dask, distributed nor cloudpickle, nor the Dask settings
(dask_settings.py, dask_cluster.py): a local run does not need them.
"""

from pivot.executor.base import KINDS, LOCAL, Capabilities, Executor, OutSpec, StageResult, StageTask, check_kind
from pivot.executor.factory import executor_factory, make_executor
from pivot.executor.local import InlineExecutor, available_cpus, call_stage, execute
from pivot.executor.workers import PoolExecutor

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
