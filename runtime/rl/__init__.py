"""Preference and RL training (``rl:``, ``reward_model:``) on TRL's trainers, with mudpuppy's checkpoints.

``plan_rl`` (args.py) maps the schema to a TRL config; ``build_rl_trainer`` (trainers.py) builds the TRL trainer
class combined with ``MudpuppyTrainer`` so staging/atomic checkpoints, rotation, preemption and resume are the
SFT machinery, not a copy.
"""

from __future__ import annotations

from typing import Any


def is_rl(cfg: Any) -> bool:
    """Process reward models train on ``MudpuppyTrainer`` (token classification), not on a TRL trainer."""
    return bool(cfg.rl or cfg.reward_model)


def build_rl_trainer(cfg: Any, **kwargs: Any) -> Any:
    from mudpuppy.runtime.rl.trainers import build_rl_trainer as build

    return build(cfg, **kwargs)
