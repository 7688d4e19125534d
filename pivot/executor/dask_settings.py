"""The `executor:` configuration, resolved: which executor, and for Dask, everything that can
be checked without the cluster, each problem with how to fix it.

`options` is the `executor:` mapping of .pivot/config.yaml (config.local.yaml overriding it key
by key), with what the command line says laid over it: `scheduler`, `remote`, `download`
(False for --no-download) and `connect_timeout`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pivot.errors import DaskError, ProjectError

if TYPE_CHECKING:
    from pivot.project import Project
    from pivot.remote_config import RemoteSpec

KINDS = ("local", "dask")
CONNECT_TIMEOUT = 5.0  # seconds to reach the scheduler before giving up


def check_kind(kind: str) -> str:
    """`kind`, when it names an executor; else why not, for the user."""
    if kind not in KINDS:
        raise ProjectError(f".pivot/config.yaml: executor.kind is {kind!r}; use 'local' or 'dask'")
    return kind


@dataclass(frozen=True)
class DaskSettings:
    scheduler: str
    remote: RemoteSpec
    download: bool = True
    connect_timeout: float = CONNECT_TIMEOUT


def resolve_settings(project: Project, options: Mapping[str, Any]) -> DaskSettings:
    """Check everything that can be checked without the cluster, each with how to fix it."""
    import importlib.util  # lazy: start-up

    if importlib.util.find_spec("distributed") is None:
        raise DaskError("--executor dask needs the distributed package on this machine and on the workers; "
                        "install it with: pip install 'pivot[dask]'")
    address = options.get("scheduler")
    if not isinstance(address, str) or not address.strip():
        raise DaskError("--executor dask needs the scheduler's address; pass --scheduler tcp://HOST:8786 or set "
                        "executor.scheduler in .pivot/config.yaml")
    from pivot import remote_config  # lazy: start-up

    if not project.config.remotes:
        raise DaskError("--executor dask needs a remote: it is the cache this machine and the workers share; "
                        "add one with 'pivot remote add NAME URL --default' (for example s3://bucket/prefix)")
    spec = remote_config.resolve(project.config, options.get("remote"))
    url = spec.url
    if "://" not in url or url.startswith("file://"):  # a shared folder: workers need its absolute path
        path = Path(url[len("file://"):] if url.startswith("file://") else url).expanduser()
        spec = type(spec)(spec.name, str(path if path.is_absolute() else project.root / path), spec.options)
    timeout = options.get("connect_timeout", CONNECT_TIMEOUT)
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise DaskError("executor.connect_timeout in .pivot/config.yaml must be a number of seconds")
    return DaskSettings(address.strip(), spec, bool(options.get("download", True)), float(timeout))
