"""Our schema -> the TRL config class and its keyword arguments, a pure mapping tests read key by key.

The base is the SFT ``TrainingArguments`` plan (same batch, schedule, checkpoint and logging semantics), plus
each mode's keys under Axolotl's names: ``trl.beta`` > ``rl_beta`` > ``dpo_beta`` (> ``orpo_alpha`` for ORPO) for
beta; ``ipo`` is DPO with TRL's ipo loss; ``simpo`` is TRL's CPO trainer with the simpo loss, as in Axolotl.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mudpuppy.launcher.errors import UserError

GRPO_PASSTHROUGH = (
    "num_generations", "generation_batch_size", "steps_per_generation", "max_completion_length", "reward_weights",
    "num_iterations", "epsilon", "epsilon_high", "loss_type", "scale_rewards", "importance_sampling_level",
    "mask_truncated_completions", "temperature", "top_p", "top_k", "min_p", "repetition_penalty",
    "generation_kwargs", "sync_ref_model", "ref_model_mixup_alpha", "ref_model_sync_steps", "log_completions",
    "num_completions_to_print", "use_vllm", "vllm_mode", "vllm_server_host", "vllm_server_port",
    "vllm_server_timeout", "vllm_gpu_memory_utilization", "multi_objective_aggregation", "chat_template_kwargs",
)


@dataclass
class RLPlan:
    mode: str            # dpo | ipo | simpo | kto | orpo | grpo | reward
    config_class: str    # TRL config class name (import path resolved by ``trainers``)
    kwargs: dict[str, Any]


def mode_of(cfg: Any) -> str:
    if cfg.rl in ("gdpo", "ebft"):  # GDPO normalises each reward before summing (as in Axolotl); EBFT is GRPO
        return "grpo"                 # with a feature-matching reward (runtime.rl.ebft)
    if cfg.rl:
        return str(cfg.rl)
    if cfg.process_reward_model:
        return "prm"
    if cfg.reward_model:
        return "reward"
    raise ValueError("not an rl config")


def beta_of(cfg: Any, mode: str) -> float | None:
    if cfg.trl is not None and cfg.trl.beta is not None:
        return float(cfg.trl.beta)
    for value in (cfg.rl_beta, cfg.dpo_beta, cfg.orpo_alpha if mode == "orpo" else None):
        if value is not None:
            return float(value)
    return None


def plan_rl(cfg: Any, base_args: dict[str, Any], *, device: str) -> RLPlan:
    mode = mode_of(cfg)
    if mode == "prm":
        raise UserError("process_reward_model: TRL 1.x no longer ships PRMTrainer, which mudpuppy would train it with",
                        hint="train a reward model (reward_model: true) or pin an older trl that has PRMTrainer")
    kwargs = dict(base_args)
    beta = beta_of(cfg, mode)
    if beta is not None and mode != "reward":
        kwargs["beta"] = beta
    if mode != "grpo":
        kwargs["max_length"] = cfg.sequence_len
    if mode in ("dpo", "ipo"):
        _dpo(cfg, mode, kwargs)
        return RLPlan(mode, "DPOConfig", kwargs)
    if mode == "kto":
        kwargs["desirable_weight"] = cfg.kto_desirable_weight or 1.0
        kwargs["undesirable_weight"] = cfg.kto_undesirable_weight or 1.0
        if cfg.precompute_ref_log_probs is not None:
            kwargs["precompute_ref_log_probs"] = cfg.precompute_ref_log_probs
        return RLPlan(mode, "KTOConfig", kwargs)
    if mode == "simpo":
        kwargs["loss_type"] = "simpo"
        if cfg.simpo_gamma is not None:
            kwargs["simpo_gamma"] = cfg.simpo_gamma
        if cfg.cpo_alpha is not None:
            kwargs["cpo_alpha"] = cfg.cpo_alpha
        _completion_limit(cfg, kwargs)
        return RLPlan(mode, "CPOConfig", kwargs)
    if mode == "orpo":
        _completion_limit(cfg, kwargs)
        return RLPlan(mode, "ORPOConfig", kwargs)
    if mode == "grpo":
        _grpo(cfg, kwargs, device)
        return RLPlan(mode, "GRPOConfig", kwargs)
    if cfg.center_rewards_coefficient is not None:
        kwargs["center_rewards_coefficient"] = float(cfg.center_rewards_coefficient)
    return RLPlan("reward", "RewardConfig", kwargs)


def _completion_limit(cfg: Any, kwargs: dict[str, Any]) -> None:
    if cfg.max_prompt_len:
        kwargs["max_completion_length"] = max(1, cfg.sequence_len - cfg.max_prompt_len)


def _dpo(cfg: Any, mode: str, kwargs: dict[str, Any]) -> None:
    if mode == "ipo":
        loss = ["ipo"]
    elif cfg.dpo_loss_type:
        loss = list(cfg.dpo_loss_type)
    else:
        loss = ["sigmoid_norm" if cfg.dpo_norm_loss else "sigmoid"]
    weights = list(cfg.dpo_loss_weights) if cfg.dpo_loss_weights else None
    if cfg.rpo_alpha is not None:  # RPO = DPO + alpha * NLL on the chosen reply (TRL's "sft" loss term)
        weights = (weights or [1.0] * len(loss)) + [float(cfg.rpo_alpha)]
        loss.append("sft")
    kwargs["loss_type"] = loss
    if weights is not None:
        if len(weights) != len(loss):
            raise UserError(f"dpo_loss_weights: {len(weights)} weights for {len(loss)} loss types {loss}")
        kwargs["loss_weights"] = weights
    if cfg.dpo_label_smoothing and mode == "dpo":
        kwargs["label_smoothing"] = cfg.dpo_label_smoothing
    if cfg.dpo_use_weighting is not None:
        kwargs["use_weighting"] = cfg.dpo_use_weighting
    if cfg.precompute_ref_log_probs is not None:
        kwargs["precompute_ref_log_probs"] = cfg.precompute_ref_log_probs


def _grpo(cfg: Any, kwargs: dict[str, Any], device: str) -> None:
    from mudpuppy.launcher.config.schema.rl import TRLSection

    trl = cfg.trl if cfg.trl is not None or cfg.rl != "ebft" else TRLSection()
    if trl is None or (not trl.reward_funcs and cfg.rl != "ebft"):
        raise UserError("rl: grpo needs trl.reward_funcs (module.function paths, e.g. rewards.length_reward)")
    for key in GRPO_PASSTHROUGH:
        value = getattr(trl, key)
        if value is not None:
            kwargs[key] = value
    if cfg.rl == "gdpo":
        kwargs.setdefault("multi_objective_aggregation", "normalize_then_sum")
    if trl.use_vllm and device != "cuda":
        raise UserError(f"trl.use_vllm: vLLM generation needs a CUDA GPU; this run is on {device}",
                        hint="set trl.use_vllm: false to generate with transformers")
    if trl.use_vllm:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:  # TRL would fail later with an ImportError traceback
            raise UserError("trl.use_vllm: vllm is not installed in the runtime environment",
                            hint="install vllm (and start its server for vllm_mode: server), or set "
                                 "trl.use_vllm: false to generate with transformers")
    funcs = len(trl.reward_funcs or []) + (1 if cfg.rl == "ebft" else 0)  # ebft's feature reward comes first
    if trl.reward_weights is not None and len(trl.reward_weights) != funcs:
        raise UserError(f"trl.reward_weights: {len(trl.reward_weights)} weights for {funcs} reward_funcs")
    generations = trl.num_generations or 8
    per_step = kwargs.get("per_device_train_batch_size", 1) * kwargs.get("gradient_accumulation_steps", 1)
    batch = trl.generation_batch_size or per_step * (trl.steps_per_generation or 1)
    if batch % generations:
        raise UserError(f"trl.num_generations: {generations} must divide the generation batch ({batch} = "
                        "micro_batch_size x gradient_accumulation_steps unless trl.generation_batch_size is set)",
                        hint="make micro_batch_size x gradient_accumulation_steps a multiple of num_generations")
