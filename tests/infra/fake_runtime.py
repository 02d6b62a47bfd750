"""A stand-in for ``python -m mudpuppy.runtime`` with the same contract, for testing the backends' mechanics.

It opens the bundle with ``open_bundle`` (as the runtime does), reads its data file through the bundle path,
counts steps with a checkpoint file, saves and exits 75 on SIGUSR1/SIGTERM, and writes ``final.txt`` into
``output_dir``. Behaviour comes from plain env vars set through ``launch.env``: FAKE_STEPS, FAKE_STEP_S and
FAKE_EXIT (exit with that code at once). Like the runtime, a second signal (another one, or the same one
after ``REPEAT_WINDOW_S``) exits at once with 128+signum and no save, so a double delivery shows up in tests.
The real runtime is exercised by the end-to-end tests.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import yaml

from mudpuppy.launcher.bundle import open_bundle
from mudpuppy.launcher.contract import anchored_output, mark_requeue

REPEAT_WINDOW_S = 2.0  # as runtime.train.signals
stop: tuple[int, float] | None = None


def _on_signal(signum: int, _frame: object) -> None:
    global stop
    if stop is not None:
        if stop[0] == signum and time.monotonic() - stop[1] < REPEAT_WINDOW_S:
            return
        print(f"fake runtime: second signal {signal.Signals(signum).name}; exiting now", flush=True)
        os._exit(128 + signum)
    stop = (signum, time.monotonic())
    print(f"fake runtime: got {signal.Signals(signum).name}", flush=True)


def main() -> int:
    config_path, workdir = open_bundle(sys.argv[1])
    os.chdir(workdir)
    config = yaml.safe_load(config_path.read_text())
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    attempt = os.environ.get("MUDPUPPY_ATTEMPT")
    data = Path(config["datasets"][0]["path"])
    rows = len(data.read_text().splitlines())
    import mudpuppy  # which installation the job runs (the venv's wheel, or the checkout)

    print(f"fake runtime: mudpuppy from {Path(mudpuppy.__file__).parent}", flush=True)
    print(f"fake runtime: rank {rank}/{world} attempt {attempt} node {os.environ.get('SLURM_NODEID')} "
          f"rows {rows} secret {'HF_TOKEN' in os.environ} python {sys.executable}", flush=True)
    if os.environ.get("FAKE_EXIT"):
        return int(os.environ["FAKE_EXIT"])
    signal.signal(signal.SIGUSR1, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    total = int(os.environ.get("FAKE_STEPS", "5"))
    delay = float(os.environ.get("FAKE_STEP_S", "0.1"))
    ckpt = Path(f"fake-ckpt-rank{rank}.txt")
    step = int(ckpt.read_text()) if ckpt.exists() else 0
    if step:
        print(f"fake runtime: resumed from step {step}", flush=True)
    while step < total:
        if stop:
            tmp = ckpt.with_suffix(".tmp")
            tmp.write_text(str(step))
            tmp.replace(ckpt)
            print(f"fake runtime: saved step {step}, exiting 75", flush=True)
            mark_requeue(rank)
            return 75
        time.sleep(delay)
        step += 1
        print(f"fake runtime: step {step}/{total} loss {1.0 / step:.4f}", flush=True)
    if rank == 0:
        out = Path(anchored_output(config.get("output_dir", "out")))  # as runtime.entry.anchor_outputs
        out.mkdir(parents=True, exist_ok=True)
        (out / "final.txt").write_text(f"steps={step} world={world}\n")
    print("fake runtime: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
