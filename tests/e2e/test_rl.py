"""Every rl mode trains a few steps end to end on the tiny Llama (in-process, CPU), with the SFT checkpoint
protocol; DPO's margin and GRPO's reward move the right way on toy tasks; DPO resumes bitwise."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from mudpuppy.launcher.contract import EXIT_OK
from tests.fixtures.tiny import EXAMPLES

RL_DATA = Path(__file__).resolve().parents[1] / "data" / "rl"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def rl_config(out: Path, **overrides: Any) -> Any:
    import yaml

    from mudpuppy.launcher.config import load_config_text

    cfg: dict[str, Any] = {
        "base_model": str(EXAMPLES / "tiny-llama"),
        "reinit_weights": True,
        "seed": 7,
        "rl": "dpo",
        "rl_beta": 0.1,
        "datasets": [{"path": str(RL_DATA / "toy_pairs.jsonl"), "type": "chatml.prompt_pairs"}],
        "sequence_len": 96,
        "adapter": "lora",
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_target_linear": True,
        "micro_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "max_steps": 4,
        "learning_rate": 0.01,
        "optimizer": "adamw_torch",
        "lr_scheduler": "constant",
        "logging_steps": 1,
        "save_strategy": "no",
        "bf16": False,
        "output_dir": str(out),
    }
    cfg.update(overrides)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    return load_config_text(yaml.safe_dump(cfg), name="rl.yml").config


def train(cfg: Any) -> list[dict[str, Any]]:
    from mudpuppy.runtime.train.run import run_training

    assert run_training(cfg, stream=io.StringIO()) == EXIT_OK
    lines = (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "loss" in r]


def _finite(logs: list[dict[str, Any]], steps: int) -> None:
    assert len(logs) == steps
    assert all(math.isfinite(r["loss"]) for r in logs), [r["loss"] for r in logs]


def test_dpo_lora_margin_grows_and_checkpoints(tmp_path: Path) -> None:
    cfg = rl_config(tmp_path / "dpo", max_steps=6, save_strategy=None, save_steps=3)
    logs = train(cfg)
    _finite(logs, 6)
    margins = [r["rewards/margins"] for r in logs]
    assert margins[-1] > margins[0] + 0.05, margins  # chosen is always "yes yes yes": the policy must prefer it
    assert logs[-1]["loss"] < logs[0]["loss"]
    assert (tmp_path / "dpo" / "checkpoint-6" / "mudpuppy-manifest.json").is_file()
    assert (tmp_path / "dpo" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("mode", ["ipo", "simpo", "orpo", "kto"])
def test_mode_trains(tmp_path: Path, mode: str) -> None:
    extra: dict[str, Any] = {"rl": mode}
    if mode == "orpo":
        orpo_rows = str(RL_DATA / "inputs" / "orpo_argilla.jsonl")
        extra.update(chat_template="chatml", orpo_alpha=0.1, rl_beta=None,
                     datasets=[{"path": orpo_rows, "type": "chat_template.argilla"}])
    if mode == "kto":
        extra["datasets"] = [{"path": str(RL_DATA / "toy_kto.jsonl"), "type": None}]
    if mode == "simpo":
        extra.update(simpo_gamma=0.5, cpo_alpha=0.0)
    _finite(train(rl_config(tmp_path / mode, max_steps=2, **extra)), 2)


def test_dpo_full_finetune_uses_frozen_reference(tmp_path: Path) -> None:
    logs = train(rl_config(tmp_path / "full", adapter=None, lora_r=None, lora_alpha=None, lora_target_linear=None,
                           max_steps=2, learning_rate=1e-3))
    _finite(logs, 2)
    assert logs[0]["rewards/margins"] == 0.0  # policy == reference before the first update


def test_dpo_resume_is_bitwise(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    whole = rl_config(tmp_path / "whole", save_strategy=None, save_steps=2)
    train(whole)
    resumed = rl_config(tmp_path / "resumed", resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-2"))
    train(resumed)
    a = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].equal(b[key]), key


def test_grpo_reward_rises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(RL_DATA)  # reward_funcs / transform resolve from the run folder
    cfg = rl_config(tmp_path / "grpo", rl="grpo", rl_beta=None, adapter=None, lora_r=None, lora_alpha=None,
                    lora_target_linear=None, max_steps=10, learning_rate=0.05, chat_template="chatml",
                    micro_batch_size=8,
                    datasets=[{"path": "toy_prompts.jsonl", "type": "toy_rewards.prompt_transform"}],
                    trl={"num_generations": 8, "max_completion_length": 8, "reward_funcs":
                         ["toy_rewards.vowel_reward"], "temperature": 1.0})
    logs = train(cfg)
    _finite(logs, 10)
    rewards = [r["reward"] for r in logs]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.05, rewards


def test_ebft_structured_alignment_rises(tmp_path: Path) -> None:
    """rl: ebft on the tiny Llama, full fine-tune: the feature network is a frozen copy of the starting weights;
    the reward (cosine of completion vs ground-truth features over the completion tokens, at two depths) rises as
    the policy learns the answer. The LoRA path (adapter disabled) is tests/unit/rl/test_ebft.py."""
    cfg = rl_config(tmp_path / "ebft", rl="ebft", rl_beta=None, max_steps=10, learning_rate=0.05, adapter=None,
                    lora_r=None, lora_alpha=None, lora_target_linear=None,
                    chat_template="chatml", micro_batch_size=8,
                    datasets=[{"path": str(RL_DATA / "toy_ebft.jsonl"), "type": "ebft_opencode.transform"}],
                    ebft={"feature_layers": [0.5, 1.0], "embed_method": "completion_mean", "diversity_coef": 0.0},
                    trl={"num_generations": 8, "max_completion_length": 8, "temperature": 1.0})
    logs = train(cfg)
    _finite(logs, 10)
    rewards = [r["reward"] for r in logs]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.05, rewards
