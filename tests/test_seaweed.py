"""The test S3 server itself (tests/seaweed.py): it binds only the ports it was given, all on
127.0.0.1, so parallel test runs cannot collide; and it checks request signatures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from seaweed import S3_BUCKET, SeaweedServer


def listening_ports(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on, from /proc (Linux)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].rsplit(":", 1)
                found.add((address, int(port, 16)))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc (Linux)")
def test_the_server_binds_only_its_given_ports_on_localhost(seaweed: SeaweedServer) -> None:
    assert seaweed.proc is not None
    bound = listening_ports(seaweed.proc.pid)
    assert bound, "no listening socket found"
    assert {address for address, _ in bound} == {"0100007F"}, bound  # 127.0.0.1, little-endian hex
    assert {port for _, port in bound} <= set(seaweed.ports.values()), (bound, seaweed.ports)
    assert seaweed.ports["s3.port"] in {port for _, port in bound}


def test_the_server_refuses_unknown_keys(seaweed: SeaweedServer) -> None:
    import boto3  # lazy: a test dependency only
    import botocore.exceptions  # lazy: as above

    seaweed.client().head_bucket(Bucket=S3_BUCKET)
    stranger = boto3.client("s3", endpoint_url=seaweed.endpoint, region_name="us-east-1",
                            aws_access_key_id="someone", aws_secret_access_key="else")
    with pytest.raises(botocore.exceptions.ClientError):
        stranger.list_objects_v2(Bucket=S3_BUCKET)
