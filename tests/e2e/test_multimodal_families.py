"""A tiny LoRA run per vision-language family (Qwen2-VL, Llama-3.2-Vision, Gemma-3 shaped; tests/fixtures/tiny_mm)
lowers its loss on generated image-caption rows, through the same runtime as text (``mudpuppy train``), with the
adapter on the language model only (``lora_target_linear`` while the towers are frozen)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_resume_and_signals import adapter_tensors, train_losses

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CAPTIONS = {"red_blue.png": "A red square on a blue background.", "gradient.png": "A grey gradient from dark to light.",
            "checker.jpg": "The picture shows a checkerboard.", "gray.png": "A grey gradient from dark to light.",
            "alpha.png": "A yellow stripe."}
TEMPLATES = {"qwen2_vl": "qwen2_vl", "mllama": "llama3_2_vision", "gemma3": "gemma3"}


@pytest.mark.parametrize("family", sorted(TEMPLATES))
def test_tiny_lora_run_lowers_the_loss(family: str, tiny_vlm, test_images, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from mudpuppy.runtime.entry import run_location

    monkeypatch.chdir(tmp_path)
    rows = []
    for ask in ("Describe the image.", "What is in this picture?"):
        for image in test_images:
            rows.append({"messages": [
                {"role": "user", "content": [{"type": "image", "path": str(image)}, {"type": "text", "text": ask}]},
                {"role": "assistant", "content": [{"type": "text", "text": CAPTIONS[image.name]}]}]})
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"base_model": str(tiny_vlm(family)), "processor_type": "AutoProcessor", "skip_prepare_dataset": True,
           "remove_unused_columns": False, "sample_packing": False, "chat_template": TEMPLATES[family],
           "datasets": [{"path": "captions.jsonl", "type": "chat_template"}], "adapter": "lora", "lora_r": 8,
           "lora_alpha": 16, "lora_target_linear": True, "micro_batch_size": 5, "num_epochs": 4,
           "learning_rate": 0.01, "optimizer": "adamw_torch", "lr_scheduler": "constant", "logging_steps": 1,
           "save_strategy": "no", "bf16": False, "seed": 3, "output_dir": "out"}
    (tmp_path / "cfg.yml").write_text(yaml.safe_dump(cfg))
    assert run_location(str(tmp_path / "cfg.yml")) == 0
    losses = [loss for _, loss in train_losses(tmp_path / "out")]
    assert len(losses) == 8
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.2, losses
    names = list(adapter_tensors(tmp_path / "out"))
    assert names and all("language_model" in n for n in names), names[:5]
    assert not any(t in n for n in names for t in ("vision", "visual", "multi_modal_projector"))


def test_a_conversation_the_template_refuses_is_one_line_before_training(tiny_vlm, test_images, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Llama 3.2 Vision's template refuses a system message next to an image: said per row, up front."""
    from mudpuppy.launcher.config import load_config_text
    from mudpuppy.launcher.errors import UserError
    from mudpuppy.runtime.data import multimodal
    from mudpuppy.runtime.model.multimodal import load_processor
    from mudpuppy.runtime.tokenizer import load_tokenizer

    monkeypatch.chdir(tmp_path)
    ok = {"messages": [{"role": "user", "content": [{"type": "image", "path": str(test_images[0])},
                                                    {"type": "text", "text": "Describe the image."}]},
                       {"role": "assistant", "content": "A red square on a blue background."}]}
    refused = {"messages": [{"role": "system", "content": "You are a helpful assistant."}, *ok["messages"]]}
    (tmp_path / "rows.jsonl").write_text(json.dumps(ok) + "\n" + json.dumps(refused) + "\n")
    text = (f"base_model: {tiny_vlm('mllama')}\nlearning_rate: 1e-4\nprocessor_type: AutoProcessor\n"
            "chat_template: llama3_2_vision\ndatasets:\n  - path: rows.jsonl\n    type: chat_template\n")
    cfg = load_config_text(text).config
    processor = load_processor(cfg, load_tokenizer(cfg))
    with pytest.raises(UserError) as info:
        multimodal.build(cfg, processor)
    assert "rows.jsonl: row 1: field 'messages': the chat template refuses this conversation: Prompting with " \
           "images is incompatible with system messages." in info.value.one_line()
    train, _, stats = multimodal.build(load_config_text(text + "skip_invalid_rows: true\n").config, processor)
    assert len(train) == 1 and stats.skipped_invalid == 1
