"""Issue 20.9: merge-lora writes the model in the training dtype (fp16 configs merge on CPU too)."""

from __future__ import annotations

import json
import struct

import pytest
import torch
import yaml

from mudpuppy.launcher.config import load_config_text
from mudpuppy.runtime.merge import merge_lora
from tests.fixtures.tiny import build_tiny_model_with_weights

pytestmark = pytest.mark.timeout(180)


def _safetensors_dtypes(path):
    raw = path.read_bytes()
    header = json.loads(raw[8: 8 + struct.unpack("<Q", raw[:8])[0]])
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A base model folder and a LoRA adapter with non-zero B (so merging changes the weights)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    tmp = tmp_path_factory.mktemp("merge")
    base = build_tiny_model_with_weights(tmp / "base")
    torch.manual_seed(3)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"],
                                      init_lora_weights=False, task_type="CAUSAL_LM"))
    model.save_pretrained(tmp / "adapter")
    return tmp


@pytest.mark.parametrize("keys,dtype,tag", [({"fp16": True, "bf16": False}, torch.float16, "F16"),
                                            ({"bf16": True}, torch.bfloat16, "BF16")])
def test_merge_writes_the_training_dtype_and_equals_base_plus_adapter(trained, keys, dtype, tag):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    doc = {"base_model": str(trained / "base"), "adapter": "lora", "lora_r": 4, "learning_rate": 1e-3,
           "datasets": [{"path": "d.jsonl", "type": "alpaca"}], "output_dir": str(trained / tag), **keys}
    cfg = load_config_text(yaml.safe_dump(doc)).config
    out = merge_lora(cfg, lora_model_dir=str(trained / "adapter"))
    assert _safetensors_dtypes(out / "model.safetensors") == {tag}
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(trained / "base"),
                                          str(trained / "adapter")).eval()
    base_only = AutoModelForCausalLM.from_pretrained(trained / "base").eval()
    ids = torch.tensor([[1, 17, 99, 250, 3, 64]])
    with torch.no_grad():
        want, got, plain = (m(input_ids=ids).logits for m in (reference, merged, base_only))
    err = (got - want).abs().max()
    assert err < 0.05, float(err)  # rounding the weights to 16 bits
    assert (plain - want).abs().max() > 10 * err  # the adapter changed the logits far beyond that
