"""What a stage needs to run, as `@stage(resources=..., timeout=..., retries=...)` declares it:
the values checked and put in one unit each (cpus a positive number, memory in bytes, gpus a
count, timeout in seconds). None of it is part of a stage's fingerprint: it changes where and
how long a stage may run, never what it computes. See docs/stages.md."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pivot.errors import PipelineError

NAMES = ("cpus", "memory", "gpus")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


@dataclass(frozen=True)
class Limits:
    """A stage's resources, timeout and retries, checked. `declared`: the resource names the
    stage gave (a cluster only matches those: the default cpus=1 asks nothing of a worker)."""

    cpus: float = 1.0
    memory: int = 0  # bytes; 0: not declared
    gpus: int = 0
    timeout: float | None = None  # seconds
    retries: int = 0
    declared: tuple[str, ...] = ()


DEFAULT = Limits()


def parse_size(value: object) -> int:
    """Bytes from an int or a string with a unit ("512MB", "32GB", "2GiB"); ValueError if not."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(value)
        return value
    match = _SIZE_RE.match(value) if isinstance(value, str) else None
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(value)
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise ValueError(value)
    return size


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as "30s", "5m", "2h", "1h30m"; ValueError if not."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION_RE.match(value.strip().lower())) and any(match.groups()):
        h, m, s = (float(g) if g else 0.0 for g in match.groups())
        seconds = h * 3600 + m * 60 + s
    else:
        raise ValueError(value)
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(value)
    return seconds


def stage_limits(where: str, resources: Mapping[str, Any] | None, timeout: object, retries: object) -> Limits:
    """The checked Limits of the stage `where` names; a PipelineError naming it if one is wrong."""
    if not isinstance(resources, (Mapping, type(None))):
        raise PipelineError(f"{where}: resources= must be a dict such as {{'cpus': 4, 'memory': '32GB', 'gpus': 1}}")
    given = dict(resources or {})
    unknown = sorted(set(given) - set(NAMES), key=str)
    if unknown:
        raise PipelineError(f"{where}: unknown resource {unknown[0]!r}; use cpus, memory or gpus")
    cpus = given.get("cpus", 1)
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not 0 < cpus < float("inf"):
        raise PipelineError(f"{where}: resources cpus={cpus!r}; give a positive number of CPUs, such as 4 or 0.5")
    memory = 0
    if "memory" in given:
        try:
            memory = parse_size(given["memory"])
        except (ValueError, TypeError):
            raise PipelineError(f"{where}: resources memory={given['memory']!r}; give bytes (an int) or a size "
                                "with a unit, such as '512MB', '32GB' or '2GiB'") from None
    gpus = given.get("gpus", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise PipelineError(f"{where}: resources gpus={gpus!r}; give a whole number of GPUs, 0 or more")
    seconds = None
    if timeout is not None:
        try:
            seconds = parse_duration(timeout)
        except (ValueError, TypeError):
            raise PipelineError(f"{where}: timeout={timeout!r}; give seconds (a number) or a duration such as "
                                "'30s', '5m', '2h' or '1h30m'") from None
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise PipelineError(f"{where}: retries={retries!r}; give a whole number of extra attempts, 0 or more")
    declared = tuple(n for n in NAMES if n in given and (n != "gpus" or gpus))
    return Limits(float(cpus), memory, gpus, seconds, retries, declared)


# The names of Dask worker resources a stage's declared resources become (docs/dask.md):
# workers offer them with `dask worker --resources "CPU=8,MEMORY=64e9,GPU=1"`.
CLUSTER_NAMES = {"cpus": "CPU", "memory": "MEMORY", "gpus": "GPU"}


def cluster_resources(lim: Limits) -> dict[str, float]:
    """The Dask resources a stage asks of a worker: only those it declared (a stage that declares
    nothing runs on any worker, as before resources existed)."""
    values = {"cpus": lim.cpus, "memory": float(lim.memory), "gpus": float(lim.gpus)}
    return {CLUSTER_NAMES[n]: values[n] for n in lim.declared}
