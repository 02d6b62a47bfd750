"""Issue 20.2: LoRA kernels under autocast with fp32 activations meeting bf16 weights (the QLoRA layout).

``prepare_model_for_kbit_training`` upcasts norms and embeddings to fp32, so fp32 hidden states reach bf16 (or
dequantised) projections. The reference is peft's own modules under the same CPU bf16 autocast.
"""

from __future__ import annotations

import copy

import pytest
import torch

from mudpuppy.kernels.apply import apply_kernels
from mudpuppy.launcher.errors import UserError
from tests.unit.kernels.conftest import lora_wrap, tiny_model

pytestmark = pytest.mark.timeout(120)
CFG = {"adapter": "lora", "lora_mlp_kernel": True, "lora_qkv_kernel": True, "lora_o_kernel": True}


def _kbit_layout(tmp_path):
    """bf16 linears, fp32 norms/embeddings/head, fp32 LoRA weights: what peft's k-bit preparation leaves."""
    model = lora_wrap(tiny_model(tmp_path))
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "lora_" not in name and "lm_head" not in name:
            module.to(torch.bfloat16)
    for name, param in model.named_parameters():
        assert param.dtype == (torch.bfloat16 if "base_layer" in name else torch.float32), name
    return model


def test_lora_kernels_under_cpu_bf16_autocast_match_peft(tmp_path):
    ref = _kbit_layout(tmp_path)
    fused = copy.deepcopy(ref)
    apply_kernels(fused, CFG)
    ids = torch.randint(0, 1024, (2, 11), generator=torch.Generator().manual_seed(0))
    results = []
    for model in (ref, fused):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        grads = {n: p.grad.float() for n, p in model.named_parameters() if p.requires_grad}
        results.append((out.logits.float(), out.loss.float(), grads))
    (logits_r, loss_r, grads_r), (logits_f, loss_f, grads_f) = results
    # both run their matmuls in bf16; they differ only in rounding order
    torch.testing.assert_close(logits_f, logits_r, rtol=0.05, atol=0.05)
    torch.testing.assert_close(loss_f, loss_r, rtol=0.01, atol=0.01)
    assert grads_f.keys() == grads_r.keys() and grads_f
    for name, g in grads_f.items():
        cos = torch.nn.functional.cosine_similarity(g.flatten(), grads_r[name].flatten(), dim=0)
        assert cos > 0.99, (name, float(cos))
    lora_grads = [p for n, p in fused.named_parameters() if p.requires_grad]
    assert all(p.grad.dtype == p.dtype == torch.float32 for p in lora_grads)


def test_lora_kernels_refuse_8bit_models():
    with pytest.raises(UserError, match="load_in_8bit"):
        apply_kernels(torch.nn.Linear(2, 2), {**CFG, "load_in_8bit": True})
