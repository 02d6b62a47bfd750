"""LoRA MLP / QKV / O kernels vs peft's own modules: outputs and every LoRA gradient."""

from __future__ import annotations

import copy

import pytest
import torch

from mudpuppy.kernels.apply import apply_kernels
from mudpuppy.kernels.lora import LoRAMLPFunction, lora_parts
from tests.unit.kernels.conftest import lora_wrap, tiny_model

pytestmark = pytest.mark.timeout(300)

CFG = {"adapter": "lora", "lora_mlp_kernel": True, "lora_qkv_kernel": True, "lora_o_kernel": True}


def _batch(t=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 1024, (2, t), generator=g)
    labels = ids.clone()
    labels[0, :5] = -100
    return ids, labels


def _compare(ref, fused, atol=1e-6):
    ids, labels = _batch()
    out_r, out_f = ref(input_ids=ids, labels=labels), fused(input_ids=ids, labels=labels)
    torch.testing.assert_close(out_f.logits, out_r.logits, rtol=1e-5, atol=atol)
    out_r.loss.backward()
    out_f.loss.backward()
    ref_params = dict(ref.named_parameters())
    trained = [(n, p) for n, p in fused.named_parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for _, p in trained)
    for name, p in trained:
        torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=1e-5, atol=atol, msg=name)


@pytest.mark.parametrize("arch,lora_bias,overrides", [
    ("llama", False, {}),
    ("qwen2", True, {}),                    # Qwen2 has q/k/v biases on the base layers; lora_bias on B
    ("llama", False, {"mlp_bias": True}),   # base bias on gate/up/down
    ("llama", False, {"hidden_act": "gelu_pytorch_tanh"}),  # GeGLU: activation derivative by autograd
])
def test_fused_lora_matches_peft(tmp_path, arch, lora_bias, overrides):
    ref = lora_wrap(tiny_model(tmp_path, arch=arch, **overrides), lora_bias=lora_bias)
    fused = copy.deepcopy(ref)
    lines = apply_kernels(fused, CFG)
    assert [line.split(":")[0] for line in lines] == ["kernel lora_mlp", "kernel lora_qkv", "kernel lora_o"]
    _compare(ref, fused)


def test_kernel_actually_runs(tmp_path, monkeypatch):
    model = lora_wrap(tiny_model(tmp_path))
    apply_kernels(model, CFG)
    calls = []
    original = LoRAMLPFunction.apply
    monkeypatch.setattr(LoRAMLPFunction, "apply", lambda *a: calls.append(1) or original(*a))
    model(input_ids=_batch()[0])
    assert len(calls) == 2  # one per layer


def test_partial_targets_mlp_without_lora_on_some_projections(tmp_path):
    ref = lora_wrap(tiny_model(tmp_path), targets=["q_proj", "v_proj", "down_proj"])
    fused = copy.deepcopy(ref)
    lines = apply_kernels(fused, {"adapter": "lora", "lora_mlp_kernel": True, "lora_qkv_kernel": True})
    assert "(2 with LoRA)" in lines[0] and "4 LoRA projections" in lines[1]
    _compare(ref, fused)


def test_disabled_or_merged_adapter_falls_back_to_peft(tmp_path):
    ref = lora_wrap(tiny_model(tmp_path))
    fused = copy.deepcopy(ref)
    apply_kernels(fused, CFG)
    ids, _ = _batch()
    with ref.disable_adapter(), fused.disable_adapter():
        torch.testing.assert_close(fused(input_ids=ids).logits, ref(input_ids=ids).logits)
    layer = fused.base_model.model.model.layers[0].mlp.gate_proj
    assert lora_parts(layer) is not None
    fused.merge_adapter()
    assert lora_parts(layer) is None
    torch.testing.assert_close(fused(input_ids=ids).logits, ref(input_ids=ids).logits, rtol=1e-4, atol=1e-5)


def test_adapter_state_dict_names_unchanged(tmp_path):
    from peft import get_peft_model_state_dict

    ref = lora_wrap(tiny_model(tmp_path))
    fused = copy.deepcopy(ref)
    apply_kernels(fused, CFG)
    assert get_peft_model_state_dict(fused).keys() == get_peft_model_state_dict(ref).keys()
