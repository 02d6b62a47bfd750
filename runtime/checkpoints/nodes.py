"""Publishing a checkpoint that several nodes wrote: every node's shards reach the volume before the manifest.

Why: with a sharded checkpoint each node writes its own files into ``output_dir/.staging/checkpoint-N``. On a
shared POSIX filesystem the barrier alone orders things. On a volume where each node's writes become visible to
others only after that node commits (Modal), rank 0's manifest could otherwise be committed, and look complete,
before another node's shards land, or list only rank 0's own files. The order is therefore, at one depth for all
backends (``launcher.volume_flush`` is a no-op where no backend asked for it):

1. every rank has written its shards (the trainer's save returned);
2. each node's first local rank asks its node to commit (its shards are on the volume when this returns);
3. all ranks agree whether every node's commit went through (a collective, so it is also the barrier);
4. rank 0 reloads its view (it now sees every node's shards), renames the staged checkpoint into place, writes
   the manifest (hashing every shard), runs ``after_publish`` (rotation), and commits;
5. barrier, so no rank starts the next step's save (or exits) before the checkpoint is published.

A node whose commit fails, or a failed reload on rank 0, leaves this checkpoint unpublished (logged; training goes
on and the next save tries again). A node that dies before step 3 leaves no manifest, so restore falls back to the
previous checkpoint. Modal refuses a reload while files on the volume are open in the container (e.g. memory-mapped
dataset caches under an ``HF_HOME`` on the volume); that shows up here as the "could not reload" error, per save.
Not yet checked against a real Modal cluster.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from mudpuppy.launcher import volume_flush
from mudpuppy.runtime.checkpoints.atomic import publish

log = logging.getLogger(__name__)


def is_node_leader() -> bool:
    """The first process of this node (torchrun's ``LOCAL_RANK`` 0; a single process is its own leader)."""
    return os.environ.get("LOCAL_RANK", "0") == "0"


def publish_across_nodes(staging: Path, run_dir: Path, step: int, *, writer: bool, agree: Callable[[bool], bool],
                         barrier: Callable[[], None],
                         after_publish: Callable[[Path], None] | None = None) -> Path | None:
    """Steps 2-5 above; returns the published checkpoint on the writer (rank 0), None elsewhere or when skipped.

    ``agree(ok)`` is True on every rank when ``ok`` was True on every rank (an all-reduce with MIN).
    """
    ok = True
    if is_node_leader():
        try:
            volume_flush.request("commit")
        except volume_flush.FlushError as exc:
            log.error("checkpoint-%d: this node's shards did not reach the volume (%s)", step, exc)
            ok = False
    everyone = agree(ok)
    final = None
    try:
        if writer and not everyone:
            log.error("checkpoint-%d not published: a node could not commit its shards; the next save retries", step)
        elif writer:
            volume_flush.request("reload")
            final = publish(staging / f"checkpoint-{step}", run_dir, step)
            if after_publish is not None:
                after_publish(final)
            try:
                volume_flush.request("commit")
            except volume_flush.FlushError as exc:  # every shard is on the volume: a later commit carries it
                log.warning("checkpoint-%d: committing its manifest failed (%s); the next commit retries", step, exc)
    except volume_flush.FlushError as exc:
        log.error("checkpoint-%d not published: rank 0 could not reload the volume (%s)", step, exc)
    finally:
        barrier()
    return final
