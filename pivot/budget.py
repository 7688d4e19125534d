"""What this machine offers the stages of a local run, and what the running ones hold of it:
CPUs (the CPUs this process may use), memory (total RAM) and GPU devices (CUDA_VISIBLE_DEVICES,
else `nvidia-smi -L`). The runner starts a stage only when its declared resources fit in what
the running stages leave; `-j` still caps how many run at once. See docs/parallel.md.

Also the check, before a run starts, that every stage can run at all: here (a GPU on a machine
without one, more memory than the machine has) or on a cluster's workers (`unplaceable`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pivot.limits import Limits, cluster_resources


def gpu_devices() -> tuple[str, ...]:
    """The GPU devices stages may be given: CUDA_VISIBLE_DEVICES if set (empty or -1: none), else
    one per line of `nvidia-smi -L`, else none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = tuple(d.strip() for d in visible.split(",") if d.strip())
        return () if devices[:1] == ("-1",) else devices
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    import subprocess  # lazy: only where nvidia-smi is (a first run's imports are on its path)

    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(str(i) for i, _ in enumerate(ln for ln in listing.splitlines() if ln.startswith("GPU ")))


def total_memory() -> int:
    """Bytes of RAM of this machine (0 when the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 0


@dataclass
class Budget:
    """The machine's CPUs, memory and GPU devices, and what each running stage holds of them."""

    cpus: float
    memory: int
    devices: tuple[str, ...]
    held: dict[str, tuple[float, int, tuple[str, ...]]] = field(default_factory=dict)
    share: float = 1.0  # what a stage that declares no `cpus` holds

    @classmethod
    def of_machine(cls, gpus: bool, jobs: int) -> Budget:
        """This machine's; its GPU devices are looked for only when some stage declares GPUs.
        A stage that declares no `cpus` holds one CPU, or less when `jobs` (-j) asks for more
        stages at once than there are CPUs: then `jobs` such stages fill the budget exactly."""
        from pivot.executor import available_cpus  # lazy: only a local run has a budget

        cpus = float(available_cpus())
        return cls(cpus, total_memory(), gpu_devices() if gpus else (), share=min(1.0, cpus / max(1, jobs)))

    def _cpus(self, lim: Limits) -> float:
        if "cpus" not in lim.declared:
            return self.share
        return min(lim.cpus, self.cpus)  # more than the machine has: the stage runs alone

    def unrunnable(self, name: str, lim: Limits) -> str | None:
        """Why stage `name` can never run on this machine, or None."""
        if lim.gpus > len(self.devices):
            have = f"only {len(self.devices)}" if self.devices else "none"
            return (f"stage '{name}' needs {lim.gpus} GPU(s) and this machine has {have} (CUDA_VISIBLE_DEVICES, "
                    "else nvidia-smi -L); run it where there are GPUs (--executor dask) or lower its resources")
        if lim.memory and self.memory and lim.memory > self.memory:
            return (f"stage '{name}' needs {lim.memory:,} bytes of memory and this machine has {self.memory:,}; "
                    "run it on a bigger machine (--executor dask) or lower its resources")
        return None

    def fits(self, lim: Limits) -> bool:
        """Whether a stage needing `lim` can start beside the running ones."""
        if not self.held:
            return True
        cpus = sum(h[0] for h in self.held.values())
        memory = sum(h[1] for h in self.held.values())
        used = sum(len(h[2]) for h in self.held.values())
        return (cpus + self._cpus(lim) <= self.cpus + 1e-9 and used + lim.gpus <= len(self.devices)
                and (not self.memory or memory + lim.memory <= self.memory))

    def take(self, name: str, lim: Limits) -> tuple[str, ...]:
        """Stage `name` starts: it holds its share until `release`; returns its GPU devices."""
        busy = {d for h in self.held.values() for d in h[2]}
        devices = tuple(d for d in self.devices if d not in busy)[:lim.gpus]
        self.held[name] = (self._cpus(lim), lim.memory, devices)
        return devices

    def release(self, name: str) -> None:
        self.held.pop(name, None)


def refusal(name: str, lim: Limits, budget: Budget | None,
            workers: Sequence[Sequence[tuple[str, float]]] | None) -> str | None:
    """Why stage `name` can run nowhere in this run: no worker of the cluster (`workers`, each
    as the resources it offers) or not this machine (`budget`) has what it declares; or None."""
    if workers:
        return unplaceable(name, lim, [dict(w) for w in workers])
    return budget.unrunnable(name, lim) if budget is not None else None


def unplaceable(name: str, lim: Limits, workers: Sequence[Mapping[str, float]]) -> str | None:
    """Why no worker of a cluster (each worker's resources, as `dask worker --resources` gave
    them) can run stage `name`, or None."""
    wanted = cluster_resources(lim)
    if not wanted or any(all(w.get(k, 0) >= v for k, v in wanted.items()) for w in workers):
        return None
    flag = ",".join(f"{k}={_number(v)}" for k, v in wanted.items())
    offered = "; ".join(sorted({",".join(f"{k}={_number(v)}" for k, v in sorted(w.items())) or "nothing"
                                for w in workers}))
    return (f"stage '{name}' needs {flag} of a worker and no worker of the cluster offers that (workers offer: "
            f"{offered or 'no workers'}); start workers with dask worker --resources \"{flag}\" (docs/dask.md)")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
