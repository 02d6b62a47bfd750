"""``optimizer: muon`` end to end on a tiny Llama (full fine-tune, CPU): the loss goes down, and a run preempted by a
real SIGTERM and resumed (Muon momentum and AdamW moments from the HF Trainer's optimizer.pt) ends bitwise equal to
the uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest

from mudpuppy.launcher.contract import EXIT_REQUEUE
from mudpuppy.runtime.checkpoints.manifest import latest_complete_checkpoint
from tests.e2e.conftest import run_runtime
from tests.e2e.test_resume_and_signals import KILL_AT_STEP, train_losses

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
MUON = {"optimizer": "muon", "adapter": None, "lora_r": None, "lora_alpha": None, "lora_dropout": None,
        "lora_target_linear": None, "learning_rate": 0.02, "weight_decay": 0.01, "max_steps": 8}


def test_muon_lowers_the_loss_and_resumes_exactly(tiny_cfg):
    import torch
    from safetensors.torch import load_file

    whole_path, whole = tiny_cfg("whole", **MUON)
    done = run_runtime([str(whole_path)])
    assert done.returncode == 0, done.stderr[-2000:]
    whole_out = Path(whole["output_dir"])
    losses = [loss for _, loss in train_losses(whole_out)]
    assert len(losses) == 8 and sum(losses[-2:]) < 0.8 * sum(losses[:2]), losses

    split_path, split = tiny_cfg("split", auto_resume_from_checkpoints=True, **MUON)
    first = run_runtime([str(split_path)], env={"KILL_AT": "3"}, prelude=KILL_AT_STEP)
    assert first.returncode == EXIT_REQUEUE, first.stderr[-2000:]
    out = Path(split["output_dir"])
    checkpoint = latest_complete_checkpoint(out)
    assert checkpoint == out / "checkpoint-3" and (checkpoint / "optimizer.pt").is_file()
    state = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert {g["use_muon"] for g in state["param_groups"]} == {True, False}
    assert any("momentum_buffer" in s for s in state["state"].values())
    second = run_runtime([str(split_path)])
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming from" in second.stdout
    assert train_losses(out) == train_losses(whole_out)
    a, b = load_file(str(whole_out / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
