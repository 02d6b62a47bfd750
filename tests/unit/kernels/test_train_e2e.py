"""A tiny LoRA fine-tune with every kernel on follows the same loss curve as with them off."""

from __future__ import annotations

import pytest
import torch

from mudpuppy.kernels.apply import apply_kernels
from tests.unit.kernels.conftest import lora_wrap, tiny_model

pytestmark = pytest.mark.timeout(300)

ALL_ON = {
    "adapter": "lora", "lora_dropout": 0.0, "lora_mlp_kernel": True, "lora_qkv_kernel": True, "lora_o_kernel": True,
    "plugins": ["axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin",
                "axolotl.integrations.liger.LigerPlugin"],
    "liger_rms_norm": True, "liger_glu_activation": True, "tiled_mlp": True, "tiled_mlp_num_shards": 3,
}


def _micro_batches(step: int):
    """Two micro-batches with prompt tokens masked and right padding, like a real SFT batch."""
    g = torch.Generator().manual_seed(100 + step)
    out = []
    for _ in range(2):
        ids = torch.randint(4, 1024, (2, 24), generator=g)
        labels = ids.clone()
        labels[:, : int(torch.randint(3, 10, (1,), generator=g))] = -100
        attn = torch.ones_like(ids)
        pad = int(torch.randint(0, 8, (1,), generator=g))
        if pad:
            attn[1, -pad:] = 0
            labels[1, -pad:] = -100
        out.append({"input_ids": ids, "attention_mask": attn, "labels": labels})
    return out


def _train(tmp_path, kernels: bool, checkpointing: bool, steps: int = 6) -> list[float]:
    model = lora_wrap(tiny_model(tmp_path, seed=3), seed=4)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if kernels:
        assert len(apply_kernels(model, ALL_ON)) == 7
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for step in range(steps):
        batches = _micro_batches(step % 2)  # repeated data: the loss must fall
        num_items = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
        total = 0.0
        for batch in batches:  # gradient accumulation, normalised over real label tokens as HF's Trainer does
            loss = model(**batch, num_items_in_batch=torch.tensor(num_items)).loss
            loss.backward()
            total += loss.item()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)
    return losses


@pytest.fixture(scope="module")
def plain_losses(tmp_path_factory) -> list[float]:
    """The plain peft curve, trained once for both cases below: gradient checkpointing leaves it unchanged (bit
    for bit on CPU, measured), so a second plain run with it on would only repeat this one."""
    return _train(tmp_path_factory.mktemp("plain"), kernels=False, checkpointing=False)


@pytest.mark.slow
@pytest.mark.parametrize("checkpointing", [False, True])
def test_loss_curve_same_with_kernels(tmp_path, plain_losses, checkpointing):
    off = plain_losses
    on = _train(tmp_path, kernels=True, checkpointing=checkpointing)
    assert off[-1] < off[0] - 0.05  # it actually learns, so the comparison means something
    assert on == pytest.approx(off, rel=1e-4, abs=1e-4)
