"""Sharded 2-node checkpoints on a commit/reload volume: no manifest on the volume before every node's shard.

Two torchrun launches (``--nnodes 2``, one gloo rank each) act as two nodes with private views of a ``file://``
volume (multinode_volume_run.py); node 1's commit is delayed by 1 s. This process polls the shared volume folder
every few milliseconds, independently of the ranks, and records what it sees the moment a manifest appears.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mudpuppy.runtime.checkpoints.manifest import MANIFEST_NAME, verify
from mudpuppy.runtime.checkpoints.sync import restore_latest
from mudpuppy.runtime.checkpoints.volume import open_volume
from tests.distributed.conftest import REPO, free_port

pytestmark = pytest.mark.timeout(90)
SCRIPT = Path(__file__).with_name("multinode_volume_run.py")


class Observer(threading.Thread):
    """For each checkpoint: which shards were on the volume when its manifest first appeared, and what it lists."""

    def __init__(self, run: Path) -> None:
        super().__init__(daemon=True)
        self.run_dir = run
        self.seen: dict[str, dict[str, object]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for manifest in self.run_dir.glob(f"checkpoint-*/{MANIFEST_NAME}") if self.run_dir.is_dir() else []:
                name = manifest.parent.name
                if name in self.seen:
                    continue
                shards = sorted(p.name for p in manifest.parent.glob("shard-*.bin"))  # after the manifest: no race
                try:
                    listed = sorted(f["path"] for f in json.loads(manifest.read_text())["files"])
                except (OSError, ValueError):
                    continue
                self.seen[name] = {"shards_present": shards, "listed": listed,
                                   "complete": verify(manifest.parent, checksums=False)}
            time.sleep(0.002)


def _two_nodes(root: Path, *extra: str, expect_ok: bool = True) -> Observer:
    observer = Observer(root / "vol" / "run")
    observer.start()
    port = str(free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", port,
                               str(SCRIPT), str(root), *extra],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for node in (0, 1)]
    try:
        outputs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        time.sleep(0.05)
        observer.stop.set()
        observer.join()
    for proc, out in zip(procs, outputs, strict=True):
        assert (proc.returncode == 0) == expect_ok, out[-4000:]
    return observer


def test_manifest_lands_after_every_nodes_shard(tmp_path: Path) -> None:
    # node 1's commit fails at step 2: that checkpoint stays unpublished, training goes on, step 3 publishes
    observer = _two_nodes(tmp_path, "--steps", "3", "--delay", "1.0", "--fail-commit-at", "2")
    assert set(observer.seen) == {"checkpoint-1", "checkpoint-3"}
    for name, seen in observer.seen.items():
        assert seen["shards_present"] == ["shard-0.bin", "shard-1.bin"], (name, seen)
        assert seen["listed"] == ["shard-0.bin", "shard-1.bin"], (name, seen)
        assert seen["complete"], (name, seen)
    # a fresh node restoring from the volume picks the newest checkpoint, sha256-verified, with both shards
    restored = restore_latest(open_volume((tmp_path / "vol" / "run").as_uri()), tmp_path / "fresh")
    assert restored is not None and restored.name == "checkpoint-3"
    assert sorted(p.name for p in restored.glob("shard-*.bin")) == ["shard-0.bin", "shard-1.bin"]


def test_without_the_protocol_the_volume_shows_a_manifest_without_node_1s_shard(tmp_path: Path) -> None:
    """The same volume and delays with per-node background commits only: what the protocol prevents happens."""
    observer = _two_nodes(tmp_path, "--steps", "1", "--delay", "1.0", "--no-flush")
    seen = observer.seen["checkpoint-1"]
    assert "shard-1.bin" not in seen["shards_present"] or "shard-1.bin" not in seen["listed"], seen


def test_a_node_lost_before_its_commit_leaves_no_manifest_and_restore_takes_the_previous(tmp_path: Path) -> None:
    observer = _two_nodes(tmp_path, "--steps", "2", "--delay", "0.2", "--die-at", "2", expect_ok=False)
    assert set(observer.seen) == {"checkpoint-1"}, observer.seen
    assert not (tmp_path / "vol" / "run" / "checkpoint-2" / MANIFEST_NAME).exists()
    restored = restore_latest(open_volume((tmp_path / "vol" / "run").as_uri()), tmp_path / "fresh")
    assert restored is not None and restored.name == "checkpoint-1"
    assert sorted(p.name for p in restored.glob("shard-*.bin")) == ["shard-0.bin", "shard-1.bin"]
