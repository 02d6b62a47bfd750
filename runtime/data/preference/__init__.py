"""Preference and RL datasets (``rl:``, ``reward_model:``): Axolotl's DPO/KTO/ORPO/GRPO dataset types -> rows in
the text shape TRL's trainers read (prompt/chosen/rejected, prompt/completion/label, prompt + reward columns).

``prepare_datasets`` dispatches here when ``is_preference(cfg)``; ``tokenized.trl_rows`` gives the token ids TRL
derives from these rows (``mudpuppy preprocess --dump``).
"""

from __future__ import annotations

from typing import Any


def is_preference(cfg: Any) -> bool:
    """Process reward models are not: their ``stepwise_supervised`` rows are token-labelled SFT rows."""
    return bool(getattr(cfg, "rl", None) or getattr(cfg, "reward_model", None))


def build(cfg: Any, tokenizer: Any) -> tuple[Any, Any, Any]:
    from mudpuppy.runtime.data.preference import pipeline

    return pipeline.build(cfg, tokenizer)
