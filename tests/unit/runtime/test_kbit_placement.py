"""Issue 20.3: under torchrun each rank's k-bit model is loaded onto its own GPU, not all onto cuda:0.

No GPU here: the CUDA calls and ``from_pretrained`` are recorded, with the environment torchrun gives rank 1.
"""

from __future__ import annotations

import pytest
import torch
import yaml

from mudpuppy.launcher.config import load_config_text
from mudpuppy.runtime.env import read_env
from mudpuppy.runtime.model import loader
from mudpuppy.runtime.model.precision import Precision
from tests.fixtures.tiny import EXAMPLES

pytestmark = pytest.mark.timeout(60)
CUDA = Precision(mode="bf16", tf32=True, device="cuda")
RANK1 = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}


def cfg(**keys):
    doc = {"base_model": str(EXAMPLES / "tiny-llama"), "learning_rate": 1e-3, "adapter": "qlora", "lora_r": 4,
           "datasets": [{"path": "d.jsonl", "type": "alpaca"}], **keys}
    return load_config_text(yaml.safe_dump(doc)).config


@pytest.fixture
def recorded(monkeypatch):
    from transformers import AutoConfig, AutoModelForCausalLM

    events: list[tuple[str, object]] = []
    real_from_config = AutoModelForCausalLM.from_config

    def from_pretrained(source, **kwargs):
        events.append(("from_pretrained", kwargs))
        return real_from_config(AutoConfig.from_pretrained(EXAMPLES / "tiny-llama"))

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: events.append(("set_device", device)))
    monkeypatch.setattr(loader, "quantization_config", lambda c, p: "bnb-config")  # bitsandbytes needs CUDA
    return events


@pytest.mark.parametrize("keys", [{"load_in_4bit": True}, {"load_in_8bit": True, "adapter": "lora"}])
def test_rank1_sets_its_device_before_loading_and_maps_the_model_onto_it(recorded, monkeypatch, keys):
    for name, value in RANK1.items():
        monkeypatch.setenv(name, value)
    loader.load_model(cfg(**keys), None, CUDA, training=False)
    assert recorded[0] == ("set_device", 1)  # before anything is loaded
    name, kwargs = recorded[1]
    assert name == "from_pretrained"
    assert kwargs["device_map"] == {"": 1} and kwargs["quantization_config"] == "bnb-config"


def test_rank0_and_explicit_device_maps(recorded):
    loader.load_model(cfg(load_in_4bit=True), None, CUDA, training=False, env=read_env({}))
    assert recorded[0] == ("set_device", 0) and recorded[1][1]["device_map"] == {"": 0}
    recorded.clear()
    loader.load_model(cfg(load_in_4bit=True, device_map="auto"), None, CUDA, training=False,
                      env=read_env(RANK1))
    assert recorded[1][1]["device_map"] == "auto"  # what the user wrote wins
    recorded.clear()
    loader.load_model(cfg(adapter="lora"), None, CUDA, training=False, env=read_env(RANK1))
    assert recorded[0] == ("set_device", 1) and "device_map" not in recorded[1][1]  # unquantised: Trainer places
