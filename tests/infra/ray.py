"""A local Ray cluster on loopback for the integration tests (facts in shared/notes/ray-s3.md).

``ray start --head --block`` runs as our child on 127.0.0.2 (127.0.0.1 would be rewritten to the external
address), with free ports and a private temp dir, and is stopped by pid: ``ray stop`` would kill every Ray
process on the machine. Token auth is disabled so an in-process ``ray.init`` elsewhere cannot switch it on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.infra.services import free_port

HOST = "127.0.0.2"


def ray_env() -> dict[str, str]:
    # Job entrypoints run `python` from the cluster's PATH: make that this interpreter (the one with Ray).
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {
        **os.environ,
        "PATH": path,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        "RAY_DEDUP_LOGS": "0",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }


def _stop_node(proc: subprocess.Popen[bytes], temp_dir: Path) -> None:
    """Stop a `ray start --block` process by its session (never `ray stop`, which kills every Ray on the machine)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # workers started by this node are in its session; anything left holding the temp dir is ours
    _kill_leftovers(temp_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass
class RayCluster:
    address: str  # the dashboard (Jobs API) URL
    gcs: str
    temp_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        _stop_node(self.proc, self.temp_dir)


def start_cluster(num_cpus: int = 4, timeout: float = 90) -> RayCluster:
    ray_bin = Path(sys.executable).with_name("ray")
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    port, dash = free_port(), free_port()
    log = temp_dir / "head.log"
    cmd = [
        str(ray_bin), "start", "--head", "--block", f"--node-ip-address={HOST}", f"--port={port}",
        f"--num-cpus={num_cpus}", "--num-gpus=0", "--include-dashboard=true", f"--dashboard-host={HOST}",
        f"--dashboard-port={dash}", f"--temp-dir={temp_dir}", "--object-store-memory=300000000",
        "--disable-usage-stats",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=ray_env(), start_new_session=True)
    cluster = RayCluster(address=f"http://{HOST}:{dash}", gcs=f"{HOST}:{port}", temp_dir=temp_dir, proc=proc, log=log)
    deadline = time.monotonic() + timeout
    import urllib.request

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace")[-3000:]
            cluster.stop()
            raise RuntimeError(f"ray start exited {proc.returncode}:\n{text}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{cluster.address}/api/version", timeout=2):
            return cluster
        time.sleep(0.5)
    cluster.stop()
    raise RuntimeError(f"the Ray dashboard did not answer in {timeout}s: {log.read_text(errors='replace')[-3000:]}")


@dataclass
class RayNode:
    """A worker node (``ray start --address=GCS --block``) joined to a ``RayCluster``, stopped by pid."""

    ip: str
    temp_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        _stop_node(self.proc, self.temp_dir)


def alive_node_ips(cluster: RayCluster) -> set[str]:
    """The IPs of the nodes the head counts as alive (Ray's state API behind the dashboard)."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"{cluster.address}/api/v0/nodes?limit=100", timeout=5) as answer:
        rows = json.load(answer)["data"]["result"]["result"]
    return {row["node_ip"] for row in rows if row.get("state") == "ALIVE"}


def add_node(cluster: RayCluster, ip: str, num_cpus: int = 1, timeout: float = 90) -> RayNode:
    """Join a worker node on ``ip`` (another loopback address) with a private temp dir; returns once it is alive."""
    ray_bin = Path(sys.executable).with_name("ray")
    temp_dir = Path(tempfile.mkdtemp(prefix="rayw", dir="/tmp"))
    log = temp_dir / "node.log"
    cmd = [
        str(ray_bin), "start", "--block", f"--address={cluster.gcs}", f"--node-ip-address={ip}",
        f"--num-cpus={num_cpus}", "--num-gpus=0", f"--temp-dir={temp_dir}", "--object-store-memory=300000000",
        "--disable-usage-stats",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=ray_env(), start_new_session=True)
    node = RayNode(ip=ip, temp_dir=temp_dir, proc=proc, log=log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace")[-3000:]
            node.stop()
            raise RuntimeError(f"ray start (worker node {ip}) exited {proc.returncode}:\n{text}")
        with contextlib.suppress(OSError, KeyError, ValueError):
            if ip in alive_node_ips(cluster):
                return node
        time.sleep(0.5)
    node.stop()
    raise RuntimeError(f"worker node {ip} did not join in {timeout}s: {log.read_text(errors='replace')[-3000:]}")


def _kill_leftovers(temp_dir: Path) -> None:
    """Processes whose command line names our private temp dir (raylets, workers of this session only)."""
    needle = str(temp_dir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)


@contextlib.contextmanager
def ray_cluster(num_cpus: int = 4) -> Iterator[RayCluster]:
    cluster = start_cluster(num_cpus)
    try:
        yield cluster
    finally:
        cluster.stop()
