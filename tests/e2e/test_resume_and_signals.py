"""Exact resume and preemption, in real child processes that receive real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mudpuppy.launcher.contract import EXIT_REQUEUE
from mudpuppy.runtime.checkpoints.manifest import complete_checkpoints, latest_complete_checkpoint, verify
from tests.e2e.conftest import REPO, run_runtime

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Sends this process a real SIGTERM right after optimizer step $KILL_AT (deterministic preemption point).
KILL_AT_STEP = """
import os, signal
from mudpuppy.runtime.train import callbacks
_orig = callbacks.PreemptionCallback.on_step_end
def _on_step_end(self, args, state, control, **kw):
    if state.global_step == int(os.environ.get("KILL_AT", "-1")):
        os.kill(os.getpid(), signal.SIGTERM)
    return _orig(self, args, state, control, **kw)
callbacks.PreemptionCallback.on_step_end = _on_step_end
"""


def train_losses(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def adapter_tensors(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


def test_interrupted_and_resumed_run_equals_uninterrupted_bitwise(tiny_cfg):
    whole_path, whole = tiny_cfg("whole")
    done = run_runtime([str(whole_path)])
    assert done.returncode == 0, done.stderr[-2000:]

    split_path, split = tiny_cfg("split", auto_resume_from_checkpoints=True)
    first = run_runtime([str(split_path)], env={"KILL_AT": "3"}, prelude=KILL_AT_STEP)
    assert first.returncode == EXIT_REQUEUE, first.stderr[-2000:]
    out = Path(split["output_dir"])
    assert latest_complete_checkpoint(out) == out / "checkpoint-3"
    assert not (out / "adapter_model.safetensors").exists()  # no final output from a preempted run

    second = run_runtime([str(split_path)])
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming from" in second.stdout

    whole_out = Path(whole["output_dir"])
    assert train_losses(out) == train_losses(whole_out)
    assert [s for s, _ in train_losses(out)] == [1, 2, 3, 4, 5, 6]
    a, b = adapter_tensors(whole_out), adapter_tensors(out)
    assert a.keys() == b.keys()
    import torch

    for key in a:
        assert torch.equal(a[key], b[key]), key


def _start(cfg_path: Path) -> subprocess.Popen[str]:
    code = "import sys\nfrom mudpuppy.runtime.entry import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.Popen([sys.executable, "-c", code, str(cfg_path)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _mtime(path: Path) -> float:
    return path.stat().st_mtime_ns if path.is_file() else 0


def _wait_for_training(proc: subprocess.Popen[str], out: Path, before: float, deadline_s: float = 120) -> None:
    """Until this process has logged a training step (metrics.jsonl changed since ``before``)."""
    metrics = out / "metrics.jsonl"
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if _mtime(metrics) != before and any("loss" in line for line in metrics.read_text().splitlines()):
            return
        if proc.poll() is not None:
            raise AssertionError(f"runtime exited early: {proc.returncode}\n{proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("training did not start in time")


def test_sigterm_saves_at_step_boundary_and_exits_75_then_second_signal_exits_at_once(tiny_cfg):
    cfg_path, cfg = tiny_cfg("long", max_steps=2000, save_steps=10_000, lora_dropout=0.0,
                             auto_resume_from_checkpoints=True)
    out = Path(cfg["output_dir"])

    before = _mtime(out / "metrics.jsonl")
    proc = _start(cfg_path)
    _wait_for_training(proc, out, before)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_REQUEUE, stderr[-2000:]
    saved = latest_complete_checkpoint(out, checksums=True)
    assert saved is not None and verify(saved, checksums=True)
    state = json.loads((saved / "trainer_state.json").read_text())
    assert state["global_step"] == int(saved.name.split("-")[1]) < 2000

    # Run again (auto-resume), then two signals back to back: exits 128+15 immediately, corrupting nothing.
    before = _mtime(out / "metrics.jsonl")
    proc = _start(cfg_path)
    _wait_for_training(proc, out, before)
    proc.send_signal(signal.SIGUSR1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "second signal" in stderr
    for checkpoint in complete_checkpoints(out):
        assert verify(checkpoint, checksums=True), checkpoint
    newest = latest_complete_checkpoint(out, checksums=True)
    assert newest is not None and int(newest.name.split("-")[1]) >= int(saved.name.split("-")[1])
