"""EBFT's reward math against a hand computation on known tensors, and its pieces (pooling, layers, transforms)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.tiny import EXAMPLES

pytestmark = pytest.mark.timeout(60)


def test_feature_rewards_by_hand() -> None:
    import torch

    from mudpuppy.runtime.rl.ebft import feature_rewards

    gen = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0], [1.0, 1.0]])  # two prompts x two generations
    gt = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    reward, align, div = feature_rewards(gen, gt, num_generations=2, alignment_coef=1.5, diversity_coef=0.5)
    cos = [1 / math.sqrt(2), 1 / math.sqrt(2), 4 / 5, 1 / math.sqrt(2)]
    dots = [0.0, 0.0, 7.0, 7.0]  # <gen0, gen1> within each prompt's pair
    assert align.tolist() == pytest.approx(cos)
    assert div.tolist() == pytest.approx(dots)
    assert reward.tolist() == pytest.approx([2 * 1.5 * c - 2 * 0.5 * d for c, d in zip(cos, dots, strict=True)])


def test_pooling_methods_respect_padding() -> None:
    import torch

    from mudpuppy.runtime.rl.ebft import pool

    hidden = torch.arange(2 * 4 * 1, dtype=torch.float).view(2, 4, 1)  # values 0..7
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    assert pool(hidden, mask, "last_token").flatten().tolist() == [2.0, 7.0]
    assert pool(hidden, mask, "mean_pooling").flatten().tolist() == [1.0, 5.5]
    assert pool(hidden, mask, "completion_mean", torch.tensor([2, 1])).flatten().tolist() == [2.0, 6.0]
    assert pool(hidden, mask, "concat").tolist() == [[0.0, 1.0, 2.0], [5.0, 6.0, 7.0]]


def test_whitening_equalises_directions() -> None:
    import torch

    from mudpuppy.runtime.rl.ebft import whiten

    gen = torch.tensor([[10.0, 0.0], [0.0, 0.1], [-10.0, 0.0], [0.0, -0.1]])
    white, _ = whiten(gen, gen)
    s = torch.linalg.svdvals(white)
    assert s.max() / s.min() == pytest.approx(1.0, rel=1e-4)


def test_dataset_transforms_are_axolotls_shapes() -> None:
    from mudpuppy.runtime.rl.ebft import dataset_transform

    opencode = dataset_transform("ebft_opencode", "transform")
    assert opencode is not None
    assert opencode({"input": "q", "output": "a"}) == {"prompt": [{"role": "user", "content": "q"}],
                                                       "ground_truth": "a"}
    last = dataset_transform("ebft_chat_multiturn", "transform_last_turn")
    assert last is not None
    msgs = [{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"},
            {"role": "user", "content": "3"}, {"role": "assistant", "content": "4"}]
    assert last({"messages": msgs}) == {"prompt": msgs[:3], "ground_truth": "4"}
    assert dataset_transform("ebft_strided_structured", "transform") is None


def test_strided_mode_validates_with_axolotls_rules() -> None:
    """Strided mode loads; Axolotl's own refusal (torch_compile + gradient checkpointing) is kept, and keys the
    mode does not read warn instead of vanishing."""
    from mudpuppy.launcher.config import load_config_text
    from mudpuppy.launcher.errors import ConfigError

    base = ("base_model: m\nlearning_rate: 1e-4\nrl: ebft\ndatasets:\n  - path: d.jsonl\n"
            "    type: ebft_opencode.transform\n")
    loaded = load_config_text(base + "ebft:\n  feature_layers: [0.5]\n  embed_method: mean_pooling\n")
    assert loaded.config.ebft is not None and loaded.config.ebft.feature_layers == [0.5]
    strided = load_config_text(base + "ebft:\n  mode: strided\n  stride: 8\n  embed_method: concat\n"
                               "  adaptive_max_tokens: true\ntrl:\n  num_generations: 4\n")
    assert strided.config.ebft is not None and strided.config.ebft.stride == 8
    said = " ".join(strided.warnings)
    assert "pools each block by its last token" in said and "adaptive_max_tokens" in said and "trl settings" in said
    with pytest.raises(ConfigError) as info:
        load_config_text(base + "torch_compile: true\ngradient_checkpointing: true\nebft:\n  mode: strided\n")
    assert any("torch_compile" in line and "Axolotl refuses it too" in line for line in info.value.lines())


def test_mode_and_dataset_type_must_agree(tmp_path: Path) -> None:
    import yaml

    from mudpuppy.launcher.config import load_config_text
    from mudpuppy.launcher.errors import UserError
    from mudpuppy.runtime.data import prepare

    data = tmp_path / "d.jsonl"
    data.write_text('{"input": "q", "output": "a", "text": "t"}\n')

    def cfg(kind: str, mode: str) -> Any:
        return load_config_text(yaml.safe_dump({
            "base_model": str(EXAMPLES / "tiny-llama"), "learning_rate": 1e-4, "rl": "ebft", "output_dir": "x",
            "dataset_prepared_path": str(tmp_path / "prep"), "special_tokens": {"pad_token": "</s>"},
            "datasets": [{"path": str(data), "type": kind}], "ebft": {"mode": mode}})).config

    with pytest.raises(UserError, match="only ebft.mode: structured reads"):
        prepare(cfg("ebft_opencode.transform", "strided"))
    with pytest.raises(UserError, match="token rows for ebft.mode: strided"):
        prepare(cfg("ebft_pretrain.transform", "structured"))


def test_local_ebft_pretrain_file_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As in Axolotl, a local ebft_pretrain.py is imported before the built-in of that name."""
    import yaml

    from mudpuppy.launcher.config import load_config_text
    from mudpuppy.runtime.data import prepare

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ebft_pretrain.py").write_text(
        "def transform(cfg, **kwargs):\n"
        "    def fn(example, tokenizer=None):\n"
        "        return {'input_ids': [5, 6, 7], 'attention_mask': [1, 1, 1], 'labels': [5, 6, 7]}\n"
        "    return fn, {'remove_columns': '__all__'}\n")
    (tmp_path / "d.jsonl").write_text('{"text": "anything"}\n')
    cfg = load_config_text(yaml.safe_dump({
        "base_model": str(EXAMPLES / "tiny-llama"), "learning_rate": 1e-4, "rl": "ebft", "output_dir": "x",
        "dataset_prepared_path": "prep", "datasets": [{"path": "d.jsonl", "type": "ebft_pretrain.transform"}],
        "ebft": {"mode": "strided"}})).config
    rows = list(prepare(cfg).train)
    assert [r["input_ids"] for r in rows] == [[5, 6, 7]]


def test_lora_features_come_from_the_base_with_the_adapter_disabled() -> None:
    """With a LoRA the feature network is the policy with its adapter switched off: features equal the base
    model's own hidden states at layers int(f * num_layers), whatever the adapter has learned."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from mudpuppy.launcher.config import load_config_text
    from mudpuppy.runtime.rl.ebft import FeatureMatchingReward

    path = str(EXAMPLES / "tiny-llama")
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token = tokenizer.eos_token
    texts = [("Q: red?", "Q: red? red red."), ("Q: tree", "Q: tree green")]
    enc = tokenizer([f for _, f in texts], return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        states = base(**enc, output_hidden_states=True).hidden_states  # 2 layers -> indices 1 and 2
    last = enc["attention_mask"].sum(1) - 1
    expected = torch.cat([states[1], states[2]], dim=-1)[torch.arange(2), last]

    policy = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    cfg = load_config_text(f"base_model: {path}\nlearning_rate: 1e-4\nrl: ebft\ndatasets:\n  - path: d.jsonl\n"
                           "    type: ebft_opencode.transform\nebft:\n  feature_layers: [0.5, 1.0]\n").config
    reward = FeatureMatchingReward(cfg, policy, tokenizer, num_generations=2)
    assert reward.network is policy and reward.layer_indices(2) == [1, 2]
    assert torch.allclose(reward.embed(texts), expected, atol=1e-5)
    with torch.no_grad():  # the adapter itself is active outside the reward (it changes the policy's states)
        active = policy(**enc, output_hidden_states=True).hidden_states[2][torch.arange(2), last]
    assert not torch.allclose(active, expected[:, 64:], atol=1e-3)
