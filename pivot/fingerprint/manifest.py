"""The manifest: the `Fingerprint` record, and how its entries and the whole manifest are hashed.

Every other module of the package builds manifest entries with these helpers, so the digest
length, the "treated as changed" marker and the merging of clashing values live in one place.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

import xxhash

from pivot.hashing import hash_bytes
from pivot.records import assemble

# Bump when summaries or manifest entries are computed differently: cached summaries are
# then ignored (and every stage's fingerprint changes once).
FP_SCHEMA = 2
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
DIGEST_CHARS = 16  # per-entry digests: 64 bits is plenty to tell versions of one entry apart
# A fresh value per process: entries that must never match the lock ("treated as changed").
CHANGED = f"changed-{os.urandom(8).hex()}"


@dataclass(frozen=True)
class Fingerprint:
    digest: str
    manifest: dict[str, str]
    notes: tuple[str, ...] = ()


def entry_digest(text: str | bytes) -> str:
    """The short digest of one manifest entry (or of the code or statement behind it)."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return hash_bytes(data)[:DIGEST_CHARS]


class PartsDigest:
    """`entry_digest` of a text given in parts, so that the whole text is never in memory."""

    def __init__(self) -> None:
        self._hash = xxhash.xxh3_128()

    def update(self, text: str) -> None:
        self._hash.update(text.encode("utf-8", "surrogatepass"))

    def hexdigest(self) -> str:
        return str(self._hash.hexdigest())[:DIGEST_CHARS]


def exception_note(exc: BaseException) -> str:
    """An exception as note text: short, and without memory addresses (notes go into locks)."""
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", f"{type(exc).__name__}: {exc}")
    return text if len(text) <= 120 else text[:117] + "..."


def merge_values(values: set[str]) -> str:
    """One manifest value for a key reached with different values (e.g. two closures made by one
    factory): order-independent, so the manifest never depends on traversal order."""
    if len(values) == 1:
        return next(iter(values))
    ordered = sorted(values)
    where = ordered[0].partition(" ")[2]
    return f"{entry_digest(chr(10).join(ordered))} {where}".rstrip()


def build_fingerprint(found: dict[str, str], clashes: dict[str, set[str]], notes: set[str]) -> Fingerprint:
    """The fingerprint of everything reached: `found` entries (with `clashes`, the keys reached
    with different values, merged), sorted, and hashed as a whole."""
    for k, vs in clashes.items():
        found[k] = merge_values(vs)
    manifest = dict(sorted(found.items()))
    text = "\n".join([f"{k}={v}" for k, v in manifest.items()])
    # Fingerprint(...) without its frozen __init__: one per stage on every command
    return assemble(Fingerprint, digest=hash_bytes(text.encode()), manifest=manifest,
                    notes=tuple(sorted(notes)) if notes else ())
