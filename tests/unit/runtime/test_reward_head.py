"""reward_model / process_reward_model load a classification head with Axolotl's label counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from mudpuppy.launcher.config import load_config_text
from mudpuppy.runtime.model.loader import load_model_config

TINY = Path(__file__).resolve().parents[3] / "templates" / "examples" / "tiny-llama"
BASE = f"base_model: {TINY}\nlearning_rate: 1e-4\ndatasets:\n  - path: d.jsonl\n    type: alpaca\n"


@pytest.mark.parametrize(("extra", "labels"), [("reward_model: true\n", 1), ("process_reward_model: true\n", 2),
                                                ("reward_model: true\nnum_labels: 3\n", 3)])
def test_reward_configs_set_num_labels_on_the_model_config(extra: str, labels: int) -> None:
    cfg = load_config_text(BASE.replace("type: alpaca", "type: chatml.intel") + extra).config  # preference rows
    assert load_model_config(cfg).num_labels == labels


def test_causal_lm_configs_keep_the_model_default() -> None:
    cfg = load_config_text(BASE).config
    assert load_model_config(cfg).num_labels == 2  # transformers' PretrainedConfig default, untouched
