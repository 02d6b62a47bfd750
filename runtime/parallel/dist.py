"""Process-group setup and teardown shared by the parallel paths, the distributed tests and the bench.

``finish`` puts a barrier before ``destroy_process_group``: without it gloo ranks that finish at different times
abort with SIGABRT after printing correct results.
"""

from __future__ import annotations

import datetime
import os


def init_process_group(timeout_s: float | None = None) -> None:
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    cuda = torch.cuda.is_available() and os.environ.get("MUDPUPPY_FORCE_GLOO") != "1"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    timeout = datetime.timedelta(seconds=timeout_s or float(os.environ.get("MUDPUPPY_DIST_TIMEOUT", "1800")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)


def finish() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
