"""What an operation needs: every object a set of outputs expands to
(directory manifests and the files they list), and which of those a remote lacks, asked in as few
requests as possible."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pivot.cache import Cache, object_relpath
from pivot.errors import NotFound
from pivot.hashing import hash_bytes, parse_manifest
from pivot.records import NeededOutput
from pivot.remote.concurrency import bounded
from pivot.remote.packfile import pack_rel
from pivot.remote.packs import Catalog, learn
from pivot.remote.storage import Storage

Needed = NeededOutput  # the name callers used before records.py held it
Manifest = list[tuple[str, int]]  # (hash, size) of a directory's files
# Listing a prefix beats asking per object once there are this many objects per prefix on average.
LIST_RATIO = 3


@dataclass
class Expanded:
    objects: dict[str, str] = field(default_factory=dict)  # hash -> the output path it belongs to
    no_manifest: list[str] = field(default_factory=list)  # directory outputs whose manifest is nowhere
    sizes: dict[str, int] = field(default_factory=dict)  # files of directories: size from the manifest


def expand(outputs: dict[str, NeededOutput], manifest: Callable[[str], Manifest | None]) -> Expanded:
    """Every object the outputs need: files, directory manifests and the files they list."""
    out = Expanded()
    for digest, need in outputs.items():
        out.objects.setdefault(digest, need.path)
        if need.is_dir:
            entries = manifest(digest)
            if entries is None:
                out.no_manifest.append(need.path)
                continue
            for h, size in entries:
                out.objects.setdefault(h, need.path)
                out.sizes[h] = size
    return out


def local_manifest(cache: Cache) -> Callable[[str], Manifest | None]:
    def read(digest: str) -> Manifest | None:
        try:
            return [(e.hash, e.size) for e in parse_manifest(cache.path(digest).read_bytes())]
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None
    return read


async def remote_manifest(storage: Storage, digest: str, catalog: Catalog | None = None) -> Manifest | None:
    """A directory's manifest read from the remote (from its pack when `catalog` places it in
    one), verified (None: absent or damaged)."""
    try:
        if catalog is not None and (e := catalog.where.get(digest)) is not None:
            data = await storage.read_range(pack_rel(e.pack), e.offset, e.offset + e.length)
        else:
            data = await storage.read(object_relpath(digest))
    except NotFound:
        return None
    if hash_bytes(data) != digest:
        return None
    return [(e.hash, e.size) for e in parse_manifest(data)]


async def missing(storage: Storage, digests: list[str], jobs: int, catalog: Catalog | None = None) -> set[str]:
    """Which of `digests` the remote lacks, in as few requests as possible. First its packs
    (`catalog`, learnt here when not given: one listing, and the indexes not read before); then,
    for the objects no pack holds, loose ones: the whole listing when the remote is small
    (estimated from one prefix, as objects spread evenly over the 256 prefixes), one listing per
    prefix when that is fewer requests than one question per object, else one question per object."""
    if not digests:
        return set()
    if catalog is None:
        catalog = await learn(storage, jobs)
    digests = [d for d in digests if d not in catalog.where]
    if not digests:
        return set()
    prefixes = sorted({d[:2] for d in digests})
    if len(digests) <= (2 if storage.pack_threshold else 8):  # a packing remote answers a listing sooner
        return await _ask_each(storage, digests, jobs)
    probe = await storage.list_dir(f"files/{prefixes[0]}")
    pages = len(probe) * 256 // 1000 + 1  # a listing page holds 1,000 names on S3
    if pages * 4 <= min(len(prefixes), len(digests)):
        present = set(await storage.list_all())
    elif len(digests) >= LIST_RATIO * len(prefixes):
        listed = await bounded(jobs, prefixes[1:], lambda p: storage.list_dir(f"files/{p}"))
        present = {p + name for p, names in [(prefixes[0], probe), *listed] for name in names}
    else:
        return await _ask_each(storage, digests, jobs)
    return {d for d in digests if d not in present}


async def _ask_each(storage: Storage, digests: list[str], jobs: int) -> set[str]:
    answers = await bounded(jobs, digests, lambda d: storage.size(object_relpath(d)))
    return {d for d, r in answers if isinstance(r, NotFound)}
