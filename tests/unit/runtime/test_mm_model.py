"""Which modules a multimodal LoRA wraps and which parameters stay frozen, on a real tiny Llama-3.2-Vision model:
``lora_target_linear`` never reaches the vision tower or projector while they are frozen, a string
``lora_target_modules`` is one peft regex (as Axolotl passes it), and ``freeze_mm_modules: false`` opts out."""

from __future__ import annotations

import re

import pytest

from mudpuppy.launcher.config import load_config_text
from mudpuppy.runtime.model.adapter import target_modules
from mudpuppy.runtime.model.multimodal import freeze_media, is_media_parameter, lora_targets

pytestmark = pytest.mark.timeout(180)
BASE = "base_model: m\nlearning_rate: 1e-4\ndatasets:\n  - path: a.jsonl\n    type: chat_template\nadapter: lora\n" \
       "lora_r: 4\n"


@pytest.fixture(scope="module")
def model(tiny_vlm):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(tiny_vlm("mllama"))


def _wrapped(cfg_text: str, model) -> list[str]:
    import torch

    targets = target_modules(load_config_text(cfg_text).config, model)
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if isinstance(targets, str):
        return [n for n in names if re.fullmatch(targets, n)]
    return [n for n in names if any(n == t or n.endswith("." + t) for t in targets)]


def test_target_linear_skips_frozen_towers_but_not_when_they_train(model) -> None:
    mm = _wrapped(BASE + "processor_type: AutoProcessor\nlora_target_linear: true\n", model)
    assert mm and all(n.startswith("model.language_model.") for n in mm)
    assert any("cross_attn" in n for n in mm) and any("mlp.down_proj" in n for n in mm)
    trained = _wrapped(BASE + "processor_type: AutoProcessor\nfreeze_mm_modules: false\nlora_target_linear: true\n",
                       model)
    assert any(n.startswith("model.vision_model.") for n in trained) and set(mm) < set(trained)


def test_string_target_modules_is_one_regex_as_axolotl_users_write_it(model) -> None:
    regex = "'model.language_model.layers.[\\d]+.(mlp|self_attn).(up|down|gate|q|k|v|o)_proj'"
    wrapped = _wrapped(BASE + f"processor_type: AutoProcessor\nlora_target_modules: {regex}\n", model)
    assert wrapped and all(re.fullmatch(r"model\.language_model\.layers\.\d+\.(mlp|self_attn)\.\w+_proj", n)
                           for n in wrapped)
    assert not any("cross_attn" in n for n in wrapped)  # the regex, not every q_proj, decides
    assert _wrapped(BASE + "lora_target_modules: q_proj\n", model) == _wrapped(
        BASE + "lora_target_modules: [q_proj]\n", model)  # a plain name stays a name, never stricter
    listed = _wrapped(BASE + "lora_target_modules: [q_proj]\n", model)
    assert any(n.startswith("model.vision_model.") for n in listed)  # a plain list keeps peft's suffix match


def test_freeze_media_freezes_towers_and_projector_only(model) -> None:
    frozen = freeze_media(model)
    media = [n for n, _ in model.named_parameters() if is_media_parameter(n)]
    assert frozen == len(media) > 0
    assert all(not p.requires_grad for n, p in model.named_parameters() if is_media_parameter(n))
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("model.language_model."))
    assert not re.fullmatch(lora_targets({"multi_modal_projector"}, []), "model.multi_modal_projector")
