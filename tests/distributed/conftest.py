"""torchrun launches for the distributed tests: 2 gloo ranks on CPU, each launch under a hard timeout."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(script: Path, *args: str, nproc: int = 2, timeout: float = 150,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``script`` on ``nproc`` local ranks; a hung collective fails the test instead of eating CI."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(script), *args]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MUDPUPPY_DIST_TIMEOUT": "90",
                "PYTHONWARNINGS": "ignore", **(env or {})}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"torchrun {script.name} hung for {timeout}s:\n{exc.stdout}\n{exc.stderr}") from None
    if proc.returncode != 0:
        raise AssertionError(f"torchrun {script.name} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc
