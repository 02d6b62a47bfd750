"""Tiny Llama/Qwen2 models (+ peft LoRA) built from the shared fixture config, in memory."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

from tests.fixtures.tiny import write_model_config


def _import_triton_interpreted() -> None:
    """Import ``triton`` with ``TRITON_INTERPRET=1`` on machines without CUDA, before any test can import it.

    Triton reads the variable when its own standard-library kernels are defined, i.e. at ``import triton``, so
    test_triton_interpret.py (which sets it per test for our kernels) needs triton first imported under it. The
    variable is restored right after: other tests keep the pure-torch paths (``use_triton`` reads it per call).
    """
    import importlib.util
    import os

    if "triton" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    import torch

    if torch.cuda.is_available():
        return
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton.language  # noqa: F401
    finally:
        if old is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = old


_import_triton_interpreted()

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_model(tmp: Path, arch: str = "llama", seed: int = 0, vocab: int = 1024, **overrides):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    write_model_config(tmp, vocab_size=vocab, arch=arch)
    config = AutoConfig.from_pretrained(tmp)
    for k, v in overrides.items():
        setattr(config, k, v)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).float()


def lora_wrap(model, targets=None, r: int = 8, alpha: int = 16, lora_bias: bool = False, seed: int = 1):
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets or ALL_LINEAR,
                     lora_bias=lora_bias, init_lora_weights=False, task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


@pytest.fixture
def model_pair(tmp_path):
    """(peft model, identical deep copy) with non-zero LoRA B so every LoRA path contributes."""
    model = lora_wrap(tiny_model(tmp_path))
    return model, copy.deepcopy(model)
