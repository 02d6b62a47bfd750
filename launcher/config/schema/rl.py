"""Preference and RL keys (``rl:`` and friends); the ``trl:`` block is passed to TRL's configs."""

from __future__ import annotations

from typing import Any, Literal

from mudpuppy.launcher.config.schema.base import Section

RLType = Literal["dpo", "ipo", "simpo", "kto", "orpo", "grpo"]


class RLSection(Section):
    rl: RLType | None = None
    rl_beta: float | None = None
    dpo_beta: float | None = None
    dpo_use_weighting: bool | None = None
    dpo_label_smoothing: float | None = None
    dpo_norm_loss: bool | None = None
    dpo_loss_type: list[str] | None = None
    precompute_ref_log_probs: bool | None = None
    kto_desirable_weight: float | None = None
    kto_undesirable_weight: float | None = None
    orpo_alpha: float | None = None
    simpo_gamma: float | None = None
    cpo_alpha: float | None = None
    rpo_alpha: float | None = None
    trl: dict[str, Any] | None = None
    reward_model: bool | None = None
    process_reward_model: bool | None = None
    num_labels: int | None = None
