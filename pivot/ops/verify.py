"""verify: the workspace, what is staged, another revision's locks, and a remote."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pivot.workspace import Workspace

if TYPE_CHECKING:
    from pivot.verify import Report, RevComparison


@dataclass(frozen=True)
class RemoteCheck:
    remote: str
    missing: dict[str, str]  # object hash -> output path: what the remote lacks

    @property
    def paths(self) -> list[str]:
        return sorted(set(self.missing.values()))


def verify_workspace(stages: tuple[str, ...] = ()) -> Report:
    """Stale stages, metrics that do not match their lock and (without `stages`) tracked data that
    differs from its record (absent outputs and tracked data are not a problem: checkout restores them)."""
    from pivot.verify import verify  # lazy: loads the pipeline

    with Workspace.find() as ws:
        return verify(ws.repo, stages)


def verify_staged(start: Path) -> Report:
    """The pre-commit check: what is being committed."""
    from pivot.verify import verify_staged as check  # lazy: start-up

    return check(start)


def verify_remote(stages: tuple[str, ...], remote_name: str | None) -> RemoteCheck:
    """Which objects the lock files need that remote `remote_name` (default: the default) lacks."""
    from pivot.ops.needed import needed_outputs  # lazy: start-up
    from pivot.remote import default_jobs, missing_on_remote  # lazy: start-up

    with Workspace.find() as ws:
        spec = ws.remote(remote_name)
        jobs = default_jobs(spec.url)
        outputs = needed_outputs(ws.project, stages)
        return RemoteCheck(spec.name, missing_on_remote(ws.storage(spec, jobs), ws.cache, outputs, jobs))


def compare_rev(stages: tuple[str, ...], rev: str) -> RevComparison:
    """`pivot status --rev`: what differs between REV's lock files and the workspace now."""
    from pivot.verify import compare_with_rev  # lazy: loads the pipeline

    with Workspace.find() as ws:
        return compare_with_rev(ws.repo, rev, stages)
