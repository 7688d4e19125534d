"""Which backend a remote's url opens: a local folder, or an fsspec file system."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pivot.remote.fsspec_storage import open_fsspec
from pivot.remote.storage import LocalStorage, Storage, pack_options

if TYPE_CHECKING:
    from pivot.remote_config import RemoteSpec


def open_storage(spec: RemoteSpec, root: Path, jobs: int) -> Storage:
    """A folder path (relative to the project `root`) or file:// url is a LocalStorage; any other
    url is opened with fsspec (imported only then)."""
    url = spec.url
    if "://" not in url or url.startswith("file://"):
        path = Path(url[len("file://"):] if url.startswith("file://") else url).expanduser()
        local = LocalStorage(spec.name, url, path if path.is_absolute() else root / path, jobs)
        # A folder answers per file at disk speed: objects stay loose unless its options say.
        local.pack_threshold, local.pack_size = pack_options(spec.name, dict(spec.options), 0)
        return local
    return open_fsspec(spec, root, jobs)
