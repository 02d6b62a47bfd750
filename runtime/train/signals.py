"""Preemption notices: SIGTERM / SIGUSR1 -> save at the next step boundary, then exit ``EXIT_REQUEUE``.

The handler only sets a flag (the submitit shape); the trainer callback checks it after each optimizer step,
asks the Trainer to save and stop, and the entry point exits 75. A second signal means "now": the process exits
at once with 128+signum. That cannot corrupt anything because checkpoints are staged and published with the
manifest last (``runtime.checkpoints.atomic``): a half-written one is simply never seen.

The *same* signal again within ``REPEAT_WINDOW_S`` is not "now": SLURM delivers one stop several ways at once
(slurmd to every process of the step, srun relaying its own copy, the batch script's trap), and reading those
echoes as a second request would throw the preemption checkpoint away.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from types import FrameType
from typing import Any

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
REPEAT_WINDOW_S = 2.0


class PreemptionWatcher:
    def __init__(self, signals: Iterable[signal.Signals] = PREEMPTION_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.received: int | None = None
        self._received_at = 0.0
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def install(self) -> PreemptionWatcher:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received == signum and time.monotonic() - self._received_at < REPEAT_WINDOW_S:
            return  # the same notice delivered twice (see the module docstring)
        if self.received is not None:
            os.write(2, f"mudpuppy: second signal ({name}); exiting now without saving\n".encode())
            os._exit(128 + signum)
        self.received = signum
        self._received_at = time.monotonic()
        os.write(2, f"mudpuppy: {name} received; saving a checkpoint at the next step, then exiting "
                    f"for requeue (send it again to exit now)\n".encode())

    def __enter__(self) -> PreemptionWatcher:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()


def agreed(flag: bool, device: Any = None) -> bool:
    """True on every rank when any rank saw the signal (ranks must stop at the same step to save together)."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        return flag
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    tensor = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())
