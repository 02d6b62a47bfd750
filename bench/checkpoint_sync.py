"""How long the training loop is blocked per checkpoint: async volume upload vs a synchronous copy.

Both write the same ~100 MB checkpoint (several safetensors-sized files + manifest) to moto's S3 server on
loopback, started by this script. "sync" is what a trainer without a background uploader does:
``upload_checkpoint`` on the training thread. "async" is ``VolumeSync.on_checkpoint``: hard-link snapshot +
enqueue; the upload runs in the background while the "training step" (a sleep, as a GPU step would be) goes on.
The async run also reports whether every checkpoint landed complete and how long the final ``wait()`` took;
with ``--step-s`` shorter than an upload, the bounded queue fills and the async mode blocks too (backpressure).
Ratios are within one run, on the same server.

    .venv/bin/python bench/checkpoint_sync.py [--mb 100] [--checkpoints 4] [--step-s 3.0]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

from mudpuppy.runtime.checkpoints.manifest import write_manifest
from mudpuppy.runtime.checkpoints.sync import VolumeSync, remote_checkpoints, upload_checkpoint
from mudpuppy.runtime.checkpoints.volume import open_volume
from mudpuppy.tests.infra.s3 import moto_server


def make_checkpoint(root: Path, step: int, megabytes: int) -> Path:
    ckpt = root / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    # Roughly the shape of a real one: model weights, optimizer state (2x), small json files.
    weights = megabytes * (1 << 20) // 3
    (ckpt / "model.safetensors").write_bytes(os.urandom(weights))
    (ckpt / "optimizer.pt").write_bytes(os.urandom(megabytes * (1 << 20) - weights))
    (ckpt / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    (ckpt / "rng_state.pth").write_bytes(os.urandom(14_000))
    write_manifest(ckpt, step)
    return ckpt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--checkpoints", type=int, default=4)
    parser.add_argument("--step-s", type=float, default=3.0, help="simulated training time between checkpoints")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp, moto_server() as server:
        work = Path(tmp)
        # The synchronous baseline: each checkpoint copied on the training thread.
        sync_vol = open_volume(f"s3://{server.bucket()}/sync", server.storage_options)
        sync_blocked = []
        for i in range(args.checkpoints):
            ckpt = make_checkpoint(work / "sync", (i + 1) * 10, args.mb)
            start = time.perf_counter()
            upload_checkpoint(sync_vol, ckpt)
            sync_blocked.append(time.perf_counter() - start)
            time.sleep(args.step_s)

        async_vol = open_volume(f"s3://{server.bucket()}/async", server.storage_options)
        out = work / "async"
        with VolumeSync(async_vol, out, queue_size=1) as vs:
            for i in range(args.checkpoints):
                ckpt = make_checkpoint(out, (i + 1) * 10, args.mb)
                vs.on_checkpoint(ckpt)
                time.sleep(args.step_s)
            drain_start = time.perf_counter()
            vs.wait()
            drain_s = time.perf_counter() - drain_start
            async_blocked = list(vs.blocked_s)
            assert not vs.errors, vs.errors
        landed = [c.step for c in remote_checkpoints(async_vol) if c.complete]

    med_sync, med_async = statistics.median(sync_blocked), statistics.median(async_blocked)
    print(f"checkpoint size: {args.mb} MB, {args.checkpoints} checkpoints, {args.step_s}s simulated step between")
    print("| mode | blocked per checkpoint, median (s) | max (s) | vs sync |")
    print("|---|---|---|---|")
    print(f"| sync copy to S3 | {med_sync:.3f} | {max(sync_blocked):.3f} | 1.00x |")
    print(f"| async (VolumeSync) | {med_async:.4f} | {max(async_blocked):.4f} | {med_async / med_sync:.4f}x |")
    print(f"async: checkpoints complete on the volume: {landed}; wait() at the end took {drain_s:.2f}s")


if __name__ == "__main__":
    main()
