"""The pack format: many small objects in one remote file, and the index that makes them count.

A pack is `PIVOTPK1` followed by the objects' bytes back to back; it is named by the xxh3-128 of
its whole content and lives at `packs/<name>.pack`. Its index lives at `packs/<name>.idx` and is
text, one line per object, ending in a checksum of everything above it:

    pivot-pack-index 1
    pack <name> <size>
    <hash> <offset> <length>
    ...
    end <xxh3-128 of the lines above, newline included>

The index is written after its pack is complete and is the only thing that makes the pack's
objects count as present: a pack without an index is garbage from an interrupted push. Both are
immutable and fully determined by the objects in them (sorted by hash), so two clones pushing the
same objects write the same bytes under the same names. This module is pure: it builds and parses
bytes, and plans which byte ranges to read; pivot/remote/packs.py moves them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pivot.errors import BadPack
from pivot.hashing import hash_bytes
from pivot.records import is_digest

MAGIC = b"PIVOTPK1"
HEADER = "pivot-pack-index 1"
PACK_DIR = "packs"


def pack_rel(name: str) -> str:
    return f"{PACK_DIR}/{name}.pack"


def index_rel(name: str) -> str:
    return f"{PACK_DIR}/{name}.idx"


def indexed(listed: Iterable[str]) -> list[str]:
    """The pack names in a folder listing whose `.pack` and `.idx` are both there: only an index
    makes a pack count, and an index without its pack names nothing readable."""
    names = set(listed)
    return sorted(n[:-4] for n in names if n.endswith(".idx") and is_digest(n[:-4]) and f"{n[:-4]}.pack" in names)


@dataclass(frozen=True)
class Entry:
    """Where one object sits: in pack `pack`, `length` bytes from `offset`."""

    digest: str
    pack: str
    offset: int
    length: int


@dataclass(frozen=True)
class Built:
    name: str
    data: bytes
    index: bytes
    entries: list[Entry]


def build(objects: list[tuple[str, bytes]]) -> Built:
    """A pack of verified (hash, bytes) objects, sorted by hash, and its index."""
    objects = sorted(dict(objects).items())
    parts = [MAGIC]
    offsets = []
    at = len(MAGIC)
    for _digest, data in objects:
        offsets.append(at)
        parts.append(data)
        at += len(data)
    blob = b"".join(parts)
    name = hash_bytes(blob)
    entries = [Entry(d, name, off, len(data)) for (d, data), off in zip(objects, offsets, strict=True)]
    lines = [HEADER, f"pack {name} {len(blob)}", *(f"{e.digest} {e.offset} {e.length}" for e in entries)]
    body = "".join(line + "\n" for line in lines).encode()
    return Built(name, blob, body + f"end {hash_bytes(body)}\n".encode(), entries)


def parse_index(name: str, data: bytes) -> tuple[int, list[Entry]]:
    """(pack size, entries) of the index of pack `name`; BadPack says what is wrong with it."""
    body, sep, trailer = data.rstrip(b"\n").rpartition(b"\n")
    if not sep or not trailer.startswith(b"end "):
        raise BadPack(index_rel(name), "it is cut short (no 'end' line)")
    body += b"\n"
    if trailer[4:].decode("ascii", "replace") != hash_bytes(body):
        raise BadPack(index_rel(name), "its checksum does not match its content")
    try:
        lines = body.decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise BadPack(index_rel(name), "it is not ASCII text") from None
    if len(lines) < 2 or lines[0] != HEADER:
        raise BadPack(index_rel(name), f"its first line is not '{HEADER}'")
    head = lines[1].split(" ")
    if len(head) != 3 or head[0] != "pack" or head[1] != name or not head[2].isdigit():
        raise BadPack(index_rel(name), f"its second line does not name pack {name} and its size")
    size = int(head[2])
    entries = []
    at = len(MAGIC)
    for n, line in enumerate(lines[2:], start=3):
        fields = line.split(" ")
        if len(fields) != 3 or not is_digest(fields[0]) or not fields[1].isdigit() or not fields[2].isdigit():
            raise BadPack(index_rel(name), f"line {n} is not '<hash> <offset> <length>'")
        offset, length = int(fields[1]), int(fields[2])
        if offset < at or offset + length > size:
            raise BadPack(index_rel(name), f"line {n}: object {fields[0]} lies outside the pack or overlaps another")
        at = offset + length
        entries.append(Entry(fields[0], name, offset, length))
    return size, entries


@dataclass(frozen=True)
class Span:
    """One ranged read: bytes [start, end) of a pack, holding `entries`."""

    pack: str
    start: int
    end: int
    entries: tuple[Entry, ...]


def coalesce(entries: list[Entry], gap: int, limit: int) -> list[Span]:
    """The ranged reads that fetch `entries`: objects of a pack in offset order, neighbours merged
    into one read while the bytes skipped between them are at most `gap` and the read stays at
    most `limit` bytes (an object larger than `limit` is one read of its own)."""
    by_pack: dict[str, list[Entry]] = {}
    for e in entries:
        by_pack.setdefault(e.pack, []).append(e)
    spans: list[Span] = []
    for pack, items in sorted(by_pack.items()):
        items.sort(key=lambda e: e.offset)
        group = [items[0]]
        for e in items[1:]:
            start, end = group[0].offset, group[-1].offset + group[-1].length
            if e.offset - end <= gap and e.offset + e.length - start <= limit:
                group.append(e)
            else:
                spans.append(Span(pack, start, end, tuple(group)))
                group = [e]
        spans.append(Span(pack, group[0].offset, group[-1].offset + group[-1].length, tuple(group)))
    return spans
