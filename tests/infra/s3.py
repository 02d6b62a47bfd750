"""An S3-compatible server on loopback for tests and benchmarks: moto's standalone server in a subprocess.

A subprocess (not moto's in-process thread) so the server never competes for the GIL with the code under test
(that would distort upload timings) and so child processes of a test can reach it too. Stopped by pid.

Use the pytest fixture ``s3_server`` (import it into a test module or conftest), or ``moto_server()`` as a
context manager outside pytest. ``server.bucket()`` creates a fresh bucket and returns its name.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import pytest

# Fake credentials: moto accepts any; real ones must never be picked up from the developer's machine.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class S3Server:
    endpoint: str
    pid: int

    @property
    def env(self) -> dict[str, str]:
        """Variables that point boto3/s3fs (also in child processes) at this server."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "key": "testing", "secret": "testing"}

    def bucket(self, prefix: str = "mp") -> str:
        import boto3

        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=name)
        return name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server(timeout_s: float = 20.0) -> Iterator[S3Server]:
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **CREDENTIALS},
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {proc.returncode} before it was ready")
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server on {endpoint} not ready after {timeout_s}s") from None
                time.sleep(0.1)
        yield S3Server(endpoint=endpoint, pid=proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with moto_server() as server:
        yield server


class HoldingProxy:
    """A TCP proxy in front of the S3 server that can freeze one chosen upload mid-checkpoint.

    ``hold_on(predicate)`` arms it: the first client request whose request line matches (e.g. the third file
    PUT of checkpoint-4) is not forwarded, and ``held`` is set; the test then kills the uploader's process while
    that checkpoint is half on the volume. Unarmed, it forwards bytes unchanged.
    """

    def __init__(self, upstream: str) -> None:
        import threading

        host, port = upstream.rsplit("//", 1)[1].split(":")
        self.upstream = (host, int(port))
        self.requests: list[str] = []
        self.held = threading.Event()
        self._predicate: Any = None
        self._lock = threading.Lock()
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(32)
        self.endpoint = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._closed = False
        self._shutdown = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def hold_on(self, predicate: Any) -> None:
        with self._lock:
            self.held.clear()
            self._predicate = predicate

    def release_all(self) -> None:
        with self._lock:
            self._predicate = None

    def close(self) -> None:
        self._closed = True
        self._shutdown.set()
        self._server.close()

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if from_client and data[:8].split(b" ")[0] in (b"GET", b"PUT", b"POST", b"DELETE", b"HEAD"):
                    line = data.split(b"\r\n", 1)[0].decode("latin-1")
                    with self._lock:
                        self.requests.append(line)
                        hold = self._predicate is not None and self._predicate(line)
                        if hold:
                            self._predicate = None
                    if hold:
                        # Swallow the request and keep the connection open, so the client neither gets an
                        # answer nor a reset to retry on: the upload hangs here until the test kills it.
                        self.held.set()
                        self._shutdown.wait()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with suppress(OSError):
                    sock.close()
