"""Process reward models (``process_reward_model: true`` + ``stepwise_supervised`` rows) train on our own trainer:
a token-classification head learns each step's correctness at its separator, so the loss falls on a toy task
whose label is readable from the step text; reward-model runs with ``bradley_terry.chat_template`` rows train
on TRL's RewardTrainer from the token ids we made."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_rl import RL_DATA, rl_config, train

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def prm_config(out: Path, **overrides: Any) -> Any:
    base: dict[str, Any] = {
        "rl": None, "rl_beta": None, "adapter": None, "lora_r": None, "lora_alpha": None,
        "lora_target_linear": None, "process_reward_model": True,
        "datasets": [{"path": str(RL_DATA / "toy_prm.jsonl"), "type": "stepwise_supervised"}],
        "max_steps": 12, "learning_rate": 0.003, "micro_batch_size": 8,
    }
    return rl_config(out, **{**base, **overrides})


def test_prm_rows_label_only_step_ends() -> None:
    from mudpuppy.runtime.data import prepare

    cfg = prm_config(Path("unused"), shuffle_merged_datasets=False)
    rows = prepare(cfg).train
    first = rows[0]
    trained = [(i, t) for i, t in enumerate(first["labels"]) if t != -100]
    # toy row 0: two steps, wrong then right, each labelled once at its trailing newline
    assert [t for _, t in trained] == [0, 1]
    from mudpuppy.runtime.tokenizer import load_tokenizer

    newline = load_tokenizer(cfg).encode("\n", add_special_tokens=False)
    assert all(first["input_ids"][i] == newline[-1] for i, _ in trained)


def test_prm_loss_falls(tmp_path: Path) -> None:
    logs = train(prm_config(tmp_path / "prm"))
    losses = [r["loss"] for r in logs]
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 * 0.8, losses
    from transformers import AutoConfig

    saved = AutoConfig.from_pretrained(tmp_path / "prm")
    assert saved.num_labels == 2 and any("TokenClassification" in a for a in saved.architectures)


@pytest.mark.parametrize("adapter", [None, "lora"])
def test_bradley_terry_reward_model_trains(tmp_path: Path, adapter: str | None) -> None:
    lora = {} if adapter else {"adapter": None, "lora_r": None, "lora_alpha": None, "lora_target_linear": None}
    cfg = rl_config(tmp_path / "bt", rl=None, rl_beta=None, reward_model=True, chat_template="chatml", **lora,
                    datasets=[{"path": str(RL_DATA / "inputs" / "bt.jsonl"), "type": "bradley_terry.chat_template"}],
                    max_steps=3, micro_batch_size=2)
    logs = train(cfg)
    assert len(logs) == 3 and all(math.isfinite(r["loss"]) for r in logs)


def test_prm_with_lora_trains_the_head(tmp_path: Path) -> None:
    """LoRA on a token-classification model: peft's TOKEN_CLS keeps the new head trainable and saved."""
    logs = train(prm_config(tmp_path / "prm_lora", adapter="lora", lora_r=8, lora_alpha=16, lora_target_linear=True,
                            max_steps=4))
    assert len(logs) == 4 and all(math.isfinite(r["loss"]) for r in logs)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "prm_lora" / "adapter_model.safetensors"), "pt") as f:
        names = list(f.keys())  # noqa: SIM118 (safe_open is not a dict)
    assert any("score" in k for k in names), names


def test_stepwise_options_axolotl_drops_warn_only_when_they_would_matter(caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace

    from mudpuppy.runtime.data.stepwise import stepwise_strategy

    as_in_example = SimpleNamespace(path="d", step_separator="\n", max_completion_length=None,
                                    train_on_last_step_only=False)
    stepwise_strategy(as_in_example, None, 64)
    assert "ignored" not in caplog.text
    stepwise_strategy(SimpleNamespace(path="d", step_separator=" | ", max_completion_length=None,
                                      train_on_last_step_only=True), None, 64)
    assert "step_separator, train_on_last_step_only ignored" in caplog.text


def test_reward_dump_shows_the_ids_trl_trains_on() -> None:
    """preprocess --dump for reward models: TRL's chosen_ids/rejected_ids (they were dropped as empty rows), and
    Bradley-Terry rows pass through TRL untouched, equal to the Axolotl golden."""
    import json

    from mudpuppy.runtime.data import prepare
    from mudpuppy.runtime.data.preference.tokenized import trl_rows
    from mudpuppy.runtime.tokenizer import load_tokenizer

    golden = json.loads((RL_DATA / "bt_chat_template.json").read_text())
    cfg = rl_config(Path("unused"), rl=None, rl_beta=None, reward_model=True, chat_template="chatml",
                    sequence_len=256, seed=42,
                    datasets=[{"path": str(RL_DATA / "inputs" / "bt.jsonl"), "type": "bradley_terry.chat_template"}])
    tokenizer = load_tokenizer(cfg)
    rows = list(trl_rows(cfg, tokenizer, prepare(cfg, tokenizer).train))
    assert sorted(map(json.dumps, rows)) == sorted(json.dumps({k: r[k] for k in ("chosen_ids", "rejected_ids")})
                                                   for r in golden["train"])
    text = rl_config(Path("unused"), rl=None, rl_beta=None, reward_model=True)
    (first, *_) = list(trl_rows(text, tokenizer, prepare(text, tokenizer).train))
    assert set(first) == {"chosen_ids", "rejected_ids"} and first["chosen_ids"][-1] == tokenizer.eos_token_id


def test_center_rewards_coefficient_reaches_trl() -> None:
    """Axolotl's reward-model examples set it; TRL's RewardConfig takes it as is."""
    from trl import RewardConfig

    from mudpuppy.runtime.rl.args import plan_rl

    cfg = rl_config(Path("unused"), rl=None, rl_beta=None, reward_model=True, center_rewards_coefficient=0.01)
    plan = plan_rl(cfg, {"output_dir": "unused", "use_cpu": True, "report_to": "none"}, device="cpu")
    assert RewardConfig(**plan.kwargs).center_rewards_coefficient == 0.01
