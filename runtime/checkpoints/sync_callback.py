"""The trainer's side of volume sync: a ``TrainerCallback`` that hands each published checkpoint to ``VolumeSync``.

Wiring in ``runtime/train/run.py``, on every rank after ``TrainingArguments`` exists (it starts torch.distributed):
only rank 0 talks to the volume; the other ranks wait at a barrier until its restore is done, then get an inert
callback. Multi-node runs need a shared ``output_dir`` (the restore lands on rank 0's disk)::

    volume = VolumeSyncCallback.for_run(cfg, output_dir, is_main=env.is_main,
                                        save_total_limit=plan.save_total_limit)  # restores from the volume now
    callbacks.append(volume)          # before the trainer is built and before resume_checkpoint() runs
    ...
    save_final(trainer, cfg, output_dir, metrics)
    volume.finish()                   # final outputs to the volume; a no-op without a volume

Creating it pulls a newer verified checkpoint from the volume into ``output_dir``, so the existing
``resume_checkpoint`` logic (newest complete local checkpoint) picks it up. ``on_save`` fires after
``MudpuppyTrainer._save_checkpoint`` has published ``checkpoint-N`` with its manifest; ``on_train_end`` waits for
queued uploads, so a preempted run (which saves, stops, and exits 75) leaves its last checkpoint on the volume.

The volume URL is ``MUDPUPPY_VOLUME`` (set by backends) or else ``launch.volume`` as written; both name this run's
directory, so relaunching the same config resumes from the same place. ``launch.options.volume`` (a mapping) is
passed to fsspec as storage options, e.g. ``{endpoint_url: http://minio:9000}``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from mudpuppy.launcher.contract import ENV_VOLUME
from mudpuppy.runtime.checkpoints.manifest import read_manifest
from mudpuppy.runtime.checkpoints.sync import VolumeSync

log = logging.getLogger(__name__)


class VolumeSyncCallback(TrainerCallback):
    def __init__(self, sync: VolumeSync | None) -> None:
        self.sync = sync
        self.restored: Path | None = None

    @classmethod
    def for_run(
        cls, cfg: Any, output_dir: Path | str, *, is_main: bool = True, save_total_limit: int | None = None
    ) -> VolumeSyncCallback:
        launch = getattr(cfg, "launch", None)
        url = os.environ.get(ENV_VOLUME, "").strip() or (getattr(launch, "volume", None) or "")
        if not url:
            return cls(None)
        if not is_main:
            _barrier()  # wait for rank 0's restore, so every rank resumes from the same checkpoint
            return cls(None)
        options = (getattr(launch, "options", None) or {}).get("volume")
        storage_options = dict(options) if isinstance(options, Mapping) else None
        limit = save_total_limit if save_total_limit is not None else getattr(cfg, "save_total_limit", None)
        sync = VolumeSync.from_url(url, output_dir, storage_options=storage_options, save_total_limit=limit)
        callback = cls(sync)
        try:
            callback.restored = sync.restore()
        finally:
            _barrier()
        if callback.restored is not None:
            log.info("resuming from %s (volume %s)", callback.restored, url)
        return callback

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.sync is None or not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if read_manifest(ckpt) is None:
            log.warning("volume sync: %s has no manifest after saving; not uploading it", ckpt)
            return
        self.sync.on_checkpoint(ckpt)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.sync is not None:
            self.sync.wait()

    def finish(self, output_dir: Path | str | None = None) -> None:
        """Upload the final outputs and stop the uploader thread."""
        if self.sync is None:
            return
        try:
            self.sync.finish(output_dir)
        finally:
            self.sync.close()

    def close(self) -> None:
        if self.sync is not None:
            self.sync.close()


def _barrier() -> None:
    """All ranks meet here (every rank calls ``for_run``); a no-op in single-process runs."""
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
