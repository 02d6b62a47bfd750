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
    chat_template_kwargs: dict[str, object] | None = Field(None, description="passed to the chat template (GRPO)")
    async_prefetch: bool | None = Field(None, description="Axolotl's async generation; generation is in step here")


class EBFTSection(Section):
    """``ebft:`` (``rl: ebft``), Axolotl's keys: structured mode (``runtime.rl.ebft``, on TRL's GRPO) and strided
    mode (``runtime.rl.ebft_strided``, our own trainer); each warns about the other mode's keys."""

    mode: Literal["structured", "strided"] | None = "structured"
    feature_layers: list[float] | None = Field(None, description="fractions of depth (default 0.25, 0.5, 0.75)")
    embed_method: Literal["last_token", "mean_pooling", "completion_mean", "concat"] | None = "last_token"
    use_whitening: bool | None = False
    alignment_coef: float | None = 1.0
    diversity_coef: float | None = 1.0
    ce_coef: float | None = 0.0
    adaptive_max_tokens: bool | None = None
    gt_length_multiplier: float | None = Field(None, ge=0.1)
    stride: int | None = Field(None, ge=1)
    context_length: int | None = Field(None, ge=1)
    generate_max_len: int | None = Field(None, ge=1)
    n_samples_per_prompt: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    rl_coef: float | None = None
    advantage_estimator: Literal["rloo", "group_norm", "reinforce"] | None = None
    min_completion_prefix: int | None = Field(None, ge=0)


class RLSection(Section):
    rl: str | None = Field(None, description="dpo, ipo, simpo, kto, orpo, grpo, gdpo or ebft (checked by name).")
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
    ebft: EBFTSection | None = None
    reward_model: bool | None = None
    center_rewards_coefficient: float | None = Field(None, description="reward models: TRL's mean-zero reward term")
    process_reward_model: bool | None = None
    num_labels: int | None = None
