"""Push, fetch, pull and gc of cache objects by hash, on a local folder or any fsspec storage.

A remote holds large objects at the cache's layout (`files/ab/cdef…`) and, on network remotes,
small ones in content-named packs (`packs/<hash>.pack` + `.idx`). Every transfer is planned first
(which objects the lock files need, which the other side lacks, asked in batches), then done once,
concurrently, with a progress line. Nothing unverified enters the cache or the remote.

Modules, one job each:
  storage         the `Storage` primitives, and the local-folder backend (`LocalStorage`)
  fsspec_storage  the fsspec/S3 backend (fsspec and s3fs imported only when one is opened)
  backends        `open_storage`: which backend a remote's url opens
  index           what this clone knows a network remote holds (`.pivot/tmp/remotes.db`)
  packfile        the pack and pack-index format, and which byte ranges to read (pure)
  packs           which packs a remote holds (`learn`), `upload` of new packs, `read_packed`
  failures        storage failures as one `RemoteError` line (`describe`, `Step`)
  concurrency     many transfers at once (bounded coroutines, thread chunks)
  plan            what a set of outputs needs (`expand`, `missing`)
  transfer        `push`, `fetch`, `download`, `missing_on_remote`
  gc              `gc_local`, `gc_remote`
  repack          gc of packs: remove unneeded ones, rewrite mostly-dead ones
  progress        the progress line and sizes for people (`Progress`, `human`, `summarize`)
"""

from pivot.errors import Corrupt, NotFound
from pivot.records import NeededOutput
from pivot.remote.backends import open_storage
from pivot.remote.failures import Step, describe
from pivot.remote.fsspec_storage import FsspecStorage
from pivot.remote.gc import GcResult, gc_local, gc_remote
from pivot.remote.index import MARKER, RemoteIndex
from pivot.remote.packs import read_object
from pivot.remote.plan import Expanded, Manifest, Needed, expand, local_manifest, missing
from pivot.remote.progress import Progress, human, summarize
from pivot.remote.storage import PART, SMALL, Listed, LocalStorage, Storage, default_jobs
from pivot.remote.transfer import Transfer, download, fetch, missing_on_remote, push

__all__ = [
    "MARKER",
    "PART",
    "SMALL",
    "Corrupt",
    "Expanded",
    "FsspecStorage",
    "GcResult",
    "Listed",
    "LocalStorage",
    "Manifest",
    "Needed",
    "NeededOutput",
    "NotFound",
    "Progress",
    "RemoteIndex",
    "Step",
    "Storage",
    "Transfer",
    "default_jobs",
    "describe",
    "download",
    "expand",
    "fetch",
    "gc_local",
    "gc_remote",
    "human",
    "local_manifest",
    "missing",
    "missing_on_remote",
    "open_storage",
    "push",
    "read_object",
    "summarize",
]
