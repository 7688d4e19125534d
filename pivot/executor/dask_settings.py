"""The `executor:` configuration, resolved: which executor, and for Dask, everything that can
be checked without the cluster, each problem with how to fix it.

`options` is the `executor:` mapping of .pivot/config.yaml (config.local.yaml overriding it key
by key), with what the command line says laid over it: `scheduler`, `remote`, `download`
(False for --no-download) and `connect_timeout`. Instead of a scheduler's address, `cluster`
describes a cluster Pivot starts and closes itself (dask_cluster.py); `--scheduler` on the
command line takes precedence over it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pivot.errors import DaskError
from pivot.executor.dask_cluster import ClusterSpec, check_class, parse_cluster

if TYPE_CHECKING:
    from pivot.project import Project
    from pivot.remote_config import RemoteSpec

CONNECT_TIMEOUT = 5.0  # seconds to reach the scheduler before giving up


@dataclass(frozen=True)
class DaskSettings:
    scheduler: str  # "" when `cluster` is set
    remote: RemoteSpec
    download: bool = True
    connect_timeout: float = CONNECT_TIMEOUT
    cluster: ClusterSpec | None = None  # a cluster to start from configuration, and close at the end


def resolve_settings(project: Project, options: Mapping[str, Any]) -> DaskSettings:
    """Check everything that can be checked without the cluster, each with how to fix it."""
    import importlib.util  # lazy: start-up

    if importlib.util.find_spec("distributed") is None:
        raise DaskError("--executor dask needs the distributed package on this machine and on the workers; "
                        "install it with: pip install 'pivot[dask]'")
    address = options.get("scheduler")
    cluster = None
    if options.get("cluster") is not None:
        where = _defined_in(project, "cluster")
        if address:
            raise DaskError(f"{where}: executor has both scheduler and cluster; keep one (a cluster to start, "
                            "or the address of a running scheduler)")
        cluster = parse_cluster(options["cluster"], where)
        address = ""
    elif not isinstance(address, str) or not address.strip():
        raise DaskError("--executor dask needs the scheduler's address or a cluster to start; pass --scheduler "
                        "tcp://HOST:8786, or set executor.scheduler or executor.cluster in .pivot/config.yaml")
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
    if cluster is not None:
        check_class(cluster)  # before anything changes: the package installed, every option known
    return DaskSettings(address.strip(), spec, bool(options.get("download", True)), float(timeout), cluster)


def _defined_in(project: Project, key: str) -> str:
    """The configuration file whose `executor.KEY` is in force (config.local.yaml wins), for messages."""
    from pivot.config import config_paths, read_file  # lazy: start-up

    shared, local = config_paths(project.root)
    for path in (local, shared):
        section = read_file(path).get("executor")
        if isinstance(section, dict) and key in section:
            return str(path.relative_to(project.root))
    return str(shared.relative_to(project.root))
