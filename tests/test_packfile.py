"""The pack format (pivot/remote/packfile.py), fuzzed: an index is either parsed into entries
that lie inside their pack without overlapping, or refused with BadPack — never another error;
any change to a valid index's bytes is refused; and the ranged reads `coalesce` plans cover every
wanted object exactly once, within the limits."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pivot.errors import BadPack
from pivot.hashing import hash_bytes
from pivot.remote.packfile import MAGIC, build, coalesce, parse_index

FUZZ = settings(max_examples=200, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
blobs = st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=20, unique=True)


@FUZZ
@given(blobs)
def test_a_built_pack_parses_back_to_its_objects(objects: list[bytes]) -> None:
    built = build([(hash_bytes(b), b) for b in objects])
    assert built.name == hash_bytes(built.data) and built.data.startswith(MAGIC)
    size, entries = parse_index(built.name, built.index)
    assert size == len(built.data) and entries == built.entries
    for e in entries:
        assert hash_bytes(built.data[e.offset:e.offset + e.length]) == e.digest


@FUZZ
@given(st.binary(max_size=2000))
def test_any_bytes_parse_or_are_refused_with_badpack(data: bytes) -> None:
    parses_or_refuses(data)


def parses_or_refuses(data: bytes) -> None:
    try:
        size, entries = parse_index("0" * 32, data)
    except BadPack as bad:
        assert bad.rel == "packs/" + "0" * 32 + ".idx" and bad.reason
        return
    at = len(MAGIC)
    for e in entries:
        assert e.offset >= at and e.offset + e.length <= size
        at = e.offset + e.length


@FUZZ
@given(blobs, st.data())
def test_any_change_to_a_valid_index_is_refused(objects: list[bytes], data: st.DataObject) -> None:
    built = build([(hash_bytes(b), b) for b in objects])
    index = bytearray(built.index)
    at = data.draw(st.integers(0, len(index) - 1))
    index[at] = (index[at] + data.draw(st.integers(1, 255))) % 256
    try:
        parsed = parse_index(built.name, bytes(index))
    except BadPack:
        return
    # only a change the checksum cannot see, in the trailing newline, may still parse, unchanged
    assert parsed == (len(built.data), built.entries)


@FUZZ
@given(st.lists(st.integers(0, 5000), min_size=1, max_size=40), st.integers(0, 3000), st.integers(1, 8000))
def test_coalesced_reads_cover_every_object_once_within_limits(lengths: list[int], gap: int, limit: int) -> None:
    built = build([(hash_bytes(str(i).encode() * (n + 1)), str(i).encode() * (n + 1)) for i, n in enumerate(lengths)])
    wanted = built.entries[::2] or built.entries
    spans = coalesce(list(wanted), gap, limit)
    covered = [e for s in spans for e in s.entries]
    assert sorted(covered, key=lambda e: e.digest) == sorted(wanted, key=lambda e: e.digest)
    for s in spans:
        assert s.start == s.entries[0].offset and s.end == s.entries[-1].offset + s.entries[-1].length
        assert len(s.entries) == 1 or s.end - s.start <= limit


LINE = st.one_of(st.just("pivot-pack-index 1"), st.just(f"pack {'0' * 32} 100"),
                 st.text(alphabet="0123456789abcdef -", max_size=60),
                 st.builds(lambda d, o, n: f"{d} {o} {n}", st.just("a" * 32), st.integers(-5, 120),
                           st.integers(-5, 120)))


@FUZZ
@given(st.lists(LINE, max_size=8))
def test_checksummed_lines_parse_or_are_refused_with_badpack(lines: list[str]) -> None:
    """Past the checksum: lines with a valid trailer still parse only when they make sense."""
    body = "".join(f"{line}\n" for line in lines).encode()
    parses_or_refuses(body + f"end {hash_bytes(body)}\n".encode())
