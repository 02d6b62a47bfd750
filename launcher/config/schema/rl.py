"""Preference and RL keys (``rl:`` and friends) with Axolotl's names; ``trl:`` carries TRL's GRPO options.

The ``trl:`` keys are TRL's own ``GRPOConfig`` field names (what Axolotl passes through), so a value here lands
in TRL unchanged; ``reward_funcs`` are ``module.function`` paths importable from the run's folder (the bundle).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mudpuppy.launcher.config.schema.base import Section


class TRLSection(Section):
    """TRL trainer options (GRPO mostly); ``beta`` also overrides ``rl_beta`` for the other modes, as in Axolotl."""

    beta: float | None = None
    num_generations: int | None = Field(None, ge=2)
    generation_batch_size: int | None = Field(None, ge=1)
    steps_per_generation: int | None = Field(None, ge=1)
    max_completion_length: int | None = Field(None, ge=1)
    reward_funcs: list[str] | None = Field(None, description="module.function paths, importable from the run folder")
    reward_weights: list[float] | None = None
    num_iterations: int | None = Field(None, ge=1)
    epsilon: float | None = None
    epsilon_high: float | None = None
    loss_type: str | None = None
    scale_rewards: str | bool | None = None
    importance_sampling_level: Literal["token", "sequence"] | None = None
    mask_truncated_completions: bool | None = None
    temperature: float | None = Field(None, gt=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    generation_kwargs: dict[str, object] | None = None
    sync_ref_model: bool | None = None
    ref_model_mixup_alpha: float | None = None
    ref_model_sync_steps: int | None = None
    log_completions: bool | None = None
    num_completions_to_print: int | None = None
    multi_objective_aggregation: Literal["sum_then_normalize", "normalize_then_sum"] | None = None
    use_vllm: bool | None = None
    vllm_mode: Literal["server", "colocate"] | None = None
    vllm_server_host: str | None = None
    vllm_server_port: int | None = None
    vllm_server_timeout: float | None = None
    vllm_gpu_memory_utilization: float | None = None


class RLSection(Section):
    rl: str | None = Field(None, description="dpo, ipo, simpo, kto, orpo, grpo or gdpo (checked by name).")
    rl_beta: float | None = None
    dpo_beta: float | None = None
    dpo_use_weighting: bool | None = None
    dpo_label_smoothing: float | None = None
    dpo_norm_loss: bool | None = None
    dpo_loss_type: list[str] | None = None
    dpo_loss_weights: list[float] | None = None
    precompute_ref_log_probs: bool | None = None
    kto_desirable_weight: float | None = None
    kto_undesirable_weight: float | None = None
    orpo_alpha: float | None = None
    simpo_gamma: float | None = None
    cpo_alpha: float | None = None
    rpo_alpha: float | None = None
    trl: TRLSection | None = None
    reward_model: bool | None = None
    center_rewards_coefficient: float | None = Field(None, description="reward models: TRL's mean-zero reward term")
    process_reward_model: bool | None = None
    num_labels: int | None = None
