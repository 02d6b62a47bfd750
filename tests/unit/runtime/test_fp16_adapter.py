"""Issue 20.5: fp16 + LoRA with modules_to_save / unfrozen_parameters trains under a (CPU) GradScaler."""

from __future__ import annotations

import pytest
import torch
import yaml

from mudpuppy.launcher.config import load_config_text
from mudpuppy.runtime.model import build_model
from mudpuppy.runtime.model.precision import Precision
from tests.fixtures.tiny import EXAMPLES

pytestmark = pytest.mark.timeout(120)
FP16 = Precision(mode="fp16", tf32=False, device="cpu")  # resolve_precision refuses fp16 on CPU; built directly


def test_fp16_lora_with_saved_modules_and_unfrozen_base_steps_under_grad_scaler():
    doc = {"base_model": str(EXAMPLES / "tiny-llama"), "reinit_weights": True, "seed": 1, "learning_rate": 1e-3,
           "datasets": [{"path": "d.jsonl", "type": "alpaca"}], "adapter": "lora", "lora_r": 4,
           "lora_target_modules": ["q_proj", "v_proj"], "lora_modules_to_save": ["lm_head"],
           "unfrozen_parameters": [r".*layers\.0\.mlp\.down_proj\.weight"]}
    model, _ = build_model(load_config_text(yaml.safe_dump(doc)).config, None, FP16)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert any("modules_to_save" in n for n in trainable) and any("down_proj" in n for n in trainable)
    assert all(p.dtype == torch.float32 for p in trainable.values()), {n: p.dtype for n, p in trainable.items()}
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert frozen and all(p.dtype == torch.float16 for p in frozen)  # the base stays half size

    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu")
    ids = torch.randint(3, 200, (2, 9), generator=torch.Generator().manual_seed(0))
    before = {n: p.detach().clone() for n, p in trainable.items()}
    with torch.autocast("cpu", dtype=torch.float16):
        loss = model(input_ids=ids, labels=ids).loss
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # raised "Attempting to unscale FP16 gradients" before the upcast
    scaler.step(optimizer)
    scaler.update()
    assert torch.isfinite(loss)
    changed = [n for n, p in trainable.items() if not torch.equal(p, before[n])]
    assert set(changed) == set(trainable), set(trainable) - set(changed)
