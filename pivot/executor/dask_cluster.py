"""A Dask cluster that Pivot starts from configuration and closes at the end of the run:

    executor:
      kind: dask
      cluster:
        class: dask_jobqueue.SLURMCluster     # any Dask cluster class, by dotted path
        options: {queue: gpu, cores: 8, memory: 32GB, walltime: "02:00:00"}
        scale: {minimum: 0, maximum: 20}      # adaptive; or {workers: 4}; absent: as constructed

Everything that can be checked without starting anything is checked by `parse_cluster` and
`check_class` (the shape, the class importable, every option a parameter of the class), each
problem one line naming the configuration file. `start_cluster` constructs the class with the
options and scales it; the executor (dask_client.py) connects to it and closes both.

Options are checked against the constructor's signature with `inspect`, without instantiating
the class. A constructor that passes `**kwargs` on is followed where Dask's deployers send them:
the `__init__` of every base class, the job class of dask-jobqueue (`job_cls`, which receives
`**job_kwargs`), and the worker classes of `LocalCluster` (`**worker_kwargs`). Where they go
anywhere else, options are not checked here (the class itself refuses unknown ones when built).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from pivot.errors import DaskError

# The distribution to install for a deployer's top-level module, and Pivot's extra that has it.
PACKAGES = {
    "dask_jobqueue": "pip install 'pivot[slurm]' (dask-jobqueue)",
    "dask_kubernetes": "pip install 'pivot[kubernetes]' (dask-kubernetes)",
    "dask_cloudprovider": "pip install dask-cloudprovider",
    "distributed": "pip install 'pivot[dask]' (distributed)",
    "coiled": "pip install coiled",
}
KEYS = ("class", "options", "scale")
SCALE_KEYS = ("minimum", "maximum", "workers")
# **kwargs that Dask's deployers pass to another class than their base (see _forwarded_to).
FORWARDED = ("job_kwargs", "worker_kwargs")


@dataclass(frozen=True)
class ClusterSpec:
    """`executor.cluster`, checked. `workers`: a fixed size; `maximum` (with `minimum`): adaptive;
    neither: the size the options give (e.g. LocalCluster's n_workers)."""

    class_path: str
    where: str  # the configuration file that sets it, for messages
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    minimum: int | None = None
    maximum: int | None = None
    workers: int | None = None

    @property
    def adaptive(self) -> bool:
        return self.maximum is not None

    def most_workers(self) -> int | None:
        """The most workers this cluster will have, when the configuration says."""
        return self.maximum if self.adaptive else self.workers


def parse_cluster(value: Any, where: str) -> ClusterSpec:
    """`executor.cluster` as written in `where`, or a one-line error saying what to fix there."""
    here = f"{where}: executor.cluster"
    if not isinstance(value, Mapping):
        raise DaskError(f"{here} must be a mapping (class: dask_jobqueue.SLURMCluster, options: {{...}}, "
                        "scale: {minimum: 0, maximum: 20})")
    unknown = sorted(str(k) for k in value if k not in KEYS)
    if unknown:
        raise DaskError(f"{here} has an unknown key '{unknown[0]}'; the keys are {', '.join(KEYS)}")
    path = value.get("class")
    if not isinstance(path, str) or "." not in path.strip(".") or any(not p.isidentifier() for p in path.split(".")):
        raise DaskError(f"{here}.class must be a class's dotted path such as dask_jobqueue.SLURMCluster "
                        f"(got {path!r})")
    options = value.get("options")
    if options is None:
        options = {}
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise DaskError(f"{here}.options must be a mapping of the class's keyword arguments (cores: 8, …)")
    minimum, maximum, workers = _scale(value.get("scale"), f"{here}.scale")
    return ClusterSpec(path, where, dict(options), minimum, maximum, workers)


def _scale(scale: Any, here: str) -> tuple[int | None, int | None, int | None]:
    if scale is None:
        return None, None, None
    if not isinstance(scale, Mapping):
        raise DaskError(f"{here} must be a mapping: {{minimum: 0, maximum: 20}} (adaptive) or {{workers: 4}}")
    unknown = sorted(str(k) for k in scale if k not in SCALE_KEYS)
    if unknown:
        raise DaskError(f"{here} has an unknown key '{unknown[0]}'; use minimum and maximum (adaptive) or workers")
    for key, number in scale.items():
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise DaskError(f"{here}.{key} must be a whole number of workers, 0 or more (got {number!r})")
    if "workers" in scale:
        if "minimum" in scale or "maximum" in scale:
            raise DaskError(f"{here}: give either workers (a fixed size) or minimum and maximum (adaptive), "
                            "not both")
        return None, None, int(scale["workers"])
    if "maximum" not in scale:
        raise DaskError(f"{here} needs a maximum: the most workers adaptive scaling may start")
    minimum, maximum = int(scale.get("minimum", 0)), int(scale["maximum"])
    if maximum < 1 or minimum > maximum:
        raise DaskError(f"{here}: minimum ({minimum}) must not be above maximum ({maximum}), and maximum "
                        "must be at least 1")
    return minimum, maximum, None


def load_class(spec: ClusterSpec) -> type:
    """The class `spec.class_path` names, imported; a missing package names what to install."""
    import importlib  # lazy: only a run with executor.cluster needs it

    module_name, _, class_name = spec.class_path.rpartition(".")
    here = f"{spec.where}: executor.cluster.class {spec.class_path}"
    try:
        with _ctrl_c_kept():
            module = importlib.import_module(module_name)
    except ImportError as exc:
        top = module_name.split(".")[0]
        missing = getattr(exc, "name", None) or top
        fix = PACKAGES.get(top, f"pip install the package that provides {top}")
        raise DaskError(f"{here}: cannot import {module_name} ({missing} is not installed); install it here "
                        f"with: {fix}") from None
    except Exception as exc:  # a deployer that fails on import: say so in one line
        raise DaskError(f"{here}: importing {module_name} failed ({type(exc).__name__}: {exc})") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise DaskError(f"{here}: {module_name} has no class {class_name}")
    return cls


@contextmanager
def _ctrl_c_kept() -> Iterator[None]:
    """Importing a deployer must not take Ctrl-C from Pivot: dask_jobqueue's runner module, for
    one, sets a SIGINT handler that calls sys.exit() (exit status 0, no roll back) on import."""
    import signal  # lazy: with the import it guards

    previous = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is not previous and previous is not None:
            with suppress(ValueError):  # not the main thread: nothing was set here either
                signal.signal(signal.SIGINT, previous)


def accepted_options(cls: type) -> set[str] | None:
    """The keyword arguments `cls(...)` accepts, or None when its **kwargs go somewhere that
    cannot be followed (then nothing is refused here)."""
    names: set[str] = set()
    todo: list[type] = [cls]
    seen: set[type] = set()
    while todo:
        klass = todo.pop()
        if klass in seen:
            continue
        seen.add(klass)
        open_ends = _collect(klass, names)
        for var in open_ends:
            targets = _forwarded_to(cls, var)
            if targets is None:
                return None
            todo.extend(targets)
    return names


def _collect(klass: type, names: set[str]) -> list[str]:
    """Add the parameters of every __init__ in `klass`'s MRO to `names`; return the names of the
    **kwargs parameters that go elsewhere than to a base class's __init__ (collected here too)."""
    import inspect  # lazy: only a run with executor.cluster checks a class
    inits = [k.__dict__["__init__"] for k in klass.__mro__ if k is not object and "__init__" in k.__dict__]
    open_ends = []
    for i, init in enumerate(inits):
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            return ["?"]
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                names.add(p.name)
            elif p.kind == p.VAR_KEYWORD and (p.name in FORWARDED or i == len(inits) - 1):
                open_ends.append(p.name)  # not (only) to super().__init__, which is collected here
    return open_ends


def _forwarded_to(cls: type, var: str) -> list[type] | None:
    job_cls = getattr(cls, "job_cls", None)
    if var == "job_kwargs" and isinstance(job_cls, type):  # dask-jobqueue: options of the job
        return [job_cls]
    if var == "worker_kwargs":  # LocalCluster: options of each worker (a Nanny, which makes a Worker)
        from distributed import Nanny, Worker  # lazy: a Dask cluster class is being checked

        return [Nanny, Worker]
    return None


def check_class(spec: ClusterSpec) -> type:
    """Import the class and check every option against its constructor, without building it."""
    cls = load_class(spec)
    accepted = accepted_options(cls)
    if accepted is not None:
        unknown = sorted(k for k in spec.options if k not in accepted)
        if unknown:
            close = _close_match(unknown[0], accepted)
            raise DaskError(f"{spec.where}: executor.cluster.options: {spec.class_path} has no option "
                            f"'{unknown[0]}'{close}; see its documentation for the options it takes")
    return cls


def _close_match(name: str, accepted: set[str]) -> str:
    import difflib  # lazy: only for the message

    match = difflib.get_close_matches(name, sorted(accepted), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def start_cluster(spec: ClusterSpec) -> Any:
    """Build the cluster and scale it as configured; the caller closes it."""
    cls = check_class(spec)
    try:
        cluster = cls(**spec.options)
    except Exception as exc:
        raise DaskError(f"{spec.where}: starting {spec.class_path} failed ({type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); check "
                        "executor.cluster.options") from None
    try:
        if spec.adaptive:
            cluster.adapt(minimum=spec.minimum or 0, maximum=spec.maximum)
        elif spec.workers is not None:
            cluster.scale(spec.workers)
    except Exception as exc:
        close_cluster(cluster, 10)
        raise DaskError(f"{spec.where}: scaling {spec.class_path} failed ({type(exc).__name__}: {exc})") from None
    return cluster


def close_cluster(cluster: Any, timeout: float) -> None:
    """Close a cluster Pivot started: its workers, its scheduler (jobs cancelled, pods deleted)."""
    import contextlib  # lazy: only at the end of a cluster run

    with contextlib.suppress(Exception):  # already gone, or its jobs were cancelled by the queue
        cluster.close(timeout=timeout)
