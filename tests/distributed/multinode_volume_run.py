"""One "node" of a 2-node sharded checkpoint on a commit/reload volume (started by test_multinode_volume.py).

Each torchrun node has its own view of the volume (``view<rank>``), as a Modal container has: its writes reach the
shared ``vol`` folder only when it commits, and others' commits reach its view only when it reloads. Node 1's
commit is slow (``--delay``), as a big shard's upload would be. Each rank writes its own shard into the staging
folder and the runtime's ``publish_across_nodes`` publishes the checkpoint. With ``--no-flush`` nobody serves the
runtime's requests: each node commits on its own when it sees new checkpoint files, like a per-node background
committer, which is the ordering the protocol replaces.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from mudpuppy.launcher.volume_flush import ENV_VOLUME_FLUSH, FlushServer
from mudpuppy.runtime.checkpoints.atomic import staging_root
from mudpuppy.runtime.checkpoints.nodes import publish_across_nodes

MANIFEST = "mudpuppy-manifest.json"


class NodeView:
    """A node's private copy of the volume: ``commit`` pushes its changes (additions, replacements, deletions)
    to ``vol`` as one step (manifest files last), ``reload`` pulls other nodes' committed files."""

    def __init__(self, view: Path, vol: Path, delay_s: float) -> None:
        self.view, self.vol, self.delay_s = view, vol, delay_s
        self.fail_next_commit = False
        self.known: dict[str, int] = {}  # what this node last committed or reloaded
        self.lock = threading.Lock()

    def _files(self, root: Path) -> dict[str, int]:
        return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}

    def commit(self) -> None:
        with self.lock:
            time.sleep(self.delay_s)
            if self.fail_next_commit:
                self.fail_next_commit = False
                raise OSError("commit refused (simulated)")
            mine = self._files(self.view)
            changed = sorted((r for r in mine if self.known.get(r) != mine[r]), key=lambda r: r.endswith(MANIFEST))
            for rel in changed:
                target = self.vol / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.commit")
                shutil.copyfile(self.view / rel, tmp)
                os.replace(tmp, target)
            for rel in sorted(set(self.known) - set(mine), key=lambda r: not r.endswith(MANIFEST)):
                (self.vol / rel).unlink(missing_ok=True)
            self.known = dict(mine)

    def reload(self) -> None:
        with self.lock:
            mine = self._files(self.view)
            for rel, size in self._files(self.vol).items():
                if mine.get(rel) != size and rel not in self.known:
                    target = self.view / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(self.vol / rel, target)
                    self.known[rel] = size


def naive_committer(node: NodeView, rank: int, stop: threading.Event) -> None:
    """Without the protocol: each node commits whenever checkpoint files appear in its view."""
    pattern = f"run/**/{MANIFEST}" if rank == 0 else "run/**/shard-*.bin"
    seen: set[str] = set()
    while not stop.wait(0.05):
        now = {str(p) for p in node.view.glob(pattern)}
        if now - seen:
            node.commit()
            seen |= now


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--no-flush", action="store_true")
    parser.add_argument("--fail-commit-at", type=int, default=0, help="node 1's commit fails at this step")
    parser.add_argument("--die-at", type=int, default=0, help="node 1 dies after writing this step's shard")
    args = parser.parse_args()
    dist.init_process_group("gloo", timeout=timedelta(seconds=20))
    rank = dist.get_rank()
    view, vol = args.root / f"view{rank}", args.root / "vol"
    view.mkdir(parents=True, exist_ok=True)
    vol.mkdir(parents=True, exist_ok=True)
    node = NodeView(view, vol, args.delay if rank == 1 else 0.0)
    stop = threading.Event()
    if args.no_flush:
        thread = threading.Thread(target=naive_committer, args=(node, rank, stop), daemon=True)
        thread.start()
    else:
        os.environ[ENV_VOLUME_FLUSH] = str(args.root / f"flush{rank}")
        server = FlushServer(args.root / f"flush{rank}", _quiet(node.commit), _quiet(node.reload)).start()
    run_dir = view / "run"
    for step in range(1, args.steps + 1):
        shard_dir = staging_root(run_dir) / f"checkpoint-{step}"
        shard_dir.mkdir(parents=True, exist_ok=True)
        (shard_dir / f"shard-{rank}.bin").write_bytes(os.urandom(256 * 1024 * (rank + 1)))
        node.fail_next_commit = rank == 1 and step == args.fail_commit_at
        if rank == 1 and step == args.die_at:
            print(f"rank 1 dies at step {step} before committing its shard", flush=True)
            os._exit(3)  # a lost node: no commit, no barrier
        publish_across_nodes(staging_root(run_dir), run_dir, step, writer=rank == 0, agree=all_ok,
                             barrier=dist.barrier)
    if args.no_flush:
        time.sleep(args.delay + 0.5)  # let the background committers finish
        stop.set()
    else:
        server.stop()
        expected = ["commit: OSError: commit refused (simulated)"] if rank == 1 and args.fail_commit_at else []
        assert server.failures == expected, server.failures
    dist.barrier()
    dist.destroy_process_group()
    print(f"rank {rank} done", flush=True)


def all_ok(ok: bool) -> bool:
    flag = torch.tensor([int(ok)])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _quiet(action):  # type: ignore[no-untyped-def]
    def run() -> str | None:
        action()
        return None

    return run


if __name__ == "__main__":
    sys.exit(main())
