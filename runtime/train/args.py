"""Our schema -> ``transformers.TrainingArguments``, as a pure mapping that tests can read key by key.

Axolotl semantics are kept where they differ from transformers' defaults: ``batch_size`` derives gradient
accumulation, ``evals_per_epoch``/``saves_per_epoch`` become step intervals, ``cosine_min_lr_ratio`` selects
transformers' min-lr cosine, ``logging_steps`` defaults to ~0.5% of training (1..10), and trackers switch on from
``wandb_project``/``mlflow_tracking_uri``. ``save_total_limit`` is applied by our own rotation (complete
checkpoints only), so transformers never sees it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from mudpuppy.launcher.config import names
from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.env import Env
from mudpuppy.runtime.model.precision import Precision


@dataclass
class TrainPlan:
    """What the trainer needs beyond TrainingArguments, computed once from config + data size."""

    args: dict[str, Any]
    steps_per_epoch: int
    total_steps: int
    save_total_limit: int | None
    loraplus: dict[str, float] | None = None
    constant_lr: tuple[float, float] | None = None
    env_vars: dict[str, str] = field(default_factory=dict)
    embedding_lr: tuple[str, float] | None = None   # ("scale", x) or ("lr", x): Axolotl's embedding param group
    offload_activations: bool = False               # gradient_checkpointing: offload -> saved tensors on CPU
    muon: bool = False                              # optimizer: muon -> MudpuppyTrainer builds Muon + AdamW


def gradient_accumulation(cfg: Any, world_size: int) -> int:
    if cfg.batch_size:
        per_step = (cfg.micro_batch_size or 1) * max(world_size, 1)
        return max(1, cfg.batch_size // per_step)
    return cfg.gradient_accumulation_steps or 1


def plan_training(cfg: Any, *, precision: Precision, env: Env, train_rows: int, has_eval: bool) -> TrainPlan:
    micro = cfg.micro_batch_size or 1
    accum = gradient_accumulation(cfg, env.world_size)
    batches_per_epoch = math.ceil(train_rows / (micro * env.world_size)) if train_rows else 0
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / accum))
    total_steps = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.num_epochs))

    args: dict[str, Any] = {
        "output_dir": cfg.output_dir,
        "per_device_train_batch_size": micro,
        "per_device_eval_batch_size": cfg.eval_batch_size or micro,
        "gradient_accumulation_steps": accum,
        "num_train_epochs": cfg.num_epochs,
        "max_steps": cfg.max_steps or -1,
        "learning_rate": cfg.learning_rate,
        "optim": optimizer_name(cfg.optimizer),
        "weight_decay": cfg.weight_decay or 0.0,
        "seed": cfg.seed if cfg.seed is not None else 42,
        # the sampler's order, explicitly: accelerate otherwise reads torch.initial_seed() when it builds it
        "data_seed": cfg.seed if cfg.seed is not None else 42,
        "bf16": precision.mode == "bf16",
        "fp16": precision.mode == "fp16",
        "use_cpu": precision.device == "cpu",
        "logging_steps": cfg.logging_steps or max(1, min(10, int(0.005 * total_steps))),
        "logging_first_step": True,
        "disable_tqdm": True,
        "include_num_input_tokens_seen": "non_padding",
        "remove_unused_columns": False,
        "report_to": cfg.report_to() or "none",
        "save_only_model": bool(cfg.save_only_model),
        "load_best_model_at_end": bool(cfg.load_best_model_at_end),
        "dataloader_num_workers": cfg.dataloader_num_workers or 0,
        "dataloader_pin_memory": bool(cfg.dataloader_pin_memory) and precision.device == "cuda",
        "dataloader_drop_last": bool(cfg.dataloader_drop_last),
        "save_strategy": "no",
        "eval_strategy": "no",
    }
    if precision.tf32:
        args["tf32"] = True
    if cfg.dataloader_prefetch_factor and args["dataloader_num_workers"]:
        args["dataloader_prefetch_factor"] = cfg.dataloader_prefetch_factor
    if cfg.optim_args:
        args["optim_args"] = (
            cfg.optim_args if isinstance(cfg.optim_args, str)
            else ",".join(f"{k}={v}" for k, v in cfg.optim_args.items())
        )
    if cfg.optim_target_modules:
        args["optim_target_modules"] = cfg.optim_target_modules
    for key in ("adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm"):
        if getattr(cfg, key) is not None:
            args[key] = getattr(cfg, key)
    if cfg.gradient_checkpointing:
        args["gradient_checkpointing"] = True
        args["gradient_checkpointing_kwargs"] = cfg.gradient_checkpointing_kwargs or {"use_reentrant": False}

    if cfg.pretraining_dataset:
        # Axolotl's setting for streams: every rank reads the stream and keeps its own slice of each global batch
        # (accelerate's IterableDatasetShard); dispatching from rank 0 would insist on equal-sized batches
        args["accelerator_config"] = {"dispatch_batches": False, "split_batches": False}
    _schedule(cfg, args)
    plan = TrainPlan(args=args, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                     save_total_limit=cfg.save_total_limit)
    # Axolotl's own Muon is built by our trainer; TrainingArguments carries AdamW's settings for its AdamW groups
    plan.muon = cfg.optimizer == "muon"
    if cfg.cosine_constant_lr_ratio is not None:
        plan.constant_lr = (cfg.cosine_min_lr_ratio or 0.0, cfg.cosine_constant_lr_ratio)
    # "offload"/"offload_disk": checkpointed activations (the tensors autograd saves) are kept in CPU memory
    plan.offload_activations = cfg.gradient_checkpointing in ("offload", "offload_disk")
    if cfg.embedding_lr_scale:  # Axolotl: the scale wins over an absolute embedding_lr
        plan.embedding_lr = ("scale", float(cfg.embedding_lr_scale))
    elif cfg.embedding_lr:
        plan.embedding_lr = ("lr", float(cfg.embedding_lr))
    if cfg.loraplus_lr_ratio:
        if plan.embedding_lr:
            raise UserError("embedding_lr/embedding_lr_scale cannot be combined with loraplus_lr_ratio",
                            hint="LoRA+ sets its own embedding learning rate (loraplus_lr_embedding)")
        if not cfg.adapter:
            raise UserError("loraplus_lr_ratio needs adapter: lora (LoRA+ scales the LoRA B matrices)")
        plan.loraplus = {"ratio": cfg.loraplus_lr_ratio, "embedding": cfg.loraplus_lr_embedding or 1e-6}

    _evaluation(cfg, args, steps_per_epoch, has_eval)
    _saving(cfg, args, steps_per_epoch)
    _extras(cfg, args, precision)
    _ddp(cfg, args, env)
    plan.env_vars = tracker_env(cfg)
    from mudpuppy.runtime.parallel import training_args_overrides  # fsdp/deepspeed, translated and resolved

    args.update(training_args_overrides(cfg, env, precision, total_steps=total_steps,
                                        warmup_steps=cfg.warmup_steps))
    if cfg.wandb_name or cfg.mlflow_run_name:
        args["run_name"] = cfg.wandb_name or cfg.mlflow_run_name
    return plan


def optimizer_name(name: str | None) -> str:
    """The ``optim`` name, checked against the registry ``config validate`` uses (``launcher.config.names``)."""
    name = name or "adamw_torch_fused"
    if name in names.OWN_OPTIMIZERS:
        return "adamw_torch"
    problem = names.check_optimizer(name)
    if problem:
        raise UserError(f"optimizer: {problem}")
    if ("8bit" in name or "paged" in name or name.startswith("lion")) and not _has_bitsandbytes():
        raise UserError(f"optimizer: {name} needs bitsandbytes (a CUDA GPU)", hint="use adamw_torch on this machine")
    return name


def _has_bitsandbytes() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def _schedule(cfg: Any, args: dict[str, Any]) -> None:
    name = cfg.lr_scheduler or "cosine"
    kwargs = dict(cfg.lr_scheduler_kwargs or {})
    if cfg.cosine_min_lr_ratio is not None and cfg.cosine_constant_lr_ratio is None:
        if name != "cosine":
            raise UserError(f"cosine_min_lr_ratio needs lr_scheduler: cosine (got {name})")
        name = "cosine_with_min_lr"
        kwargs["min_lr_rate"] = cfg.cosine_min_lr_ratio
    problem = names.check_scheduler(name)
    if problem:
        raise UserError(f"lr_scheduler: {problem}", hint="use one of " + ", ".join(names.SCHEDULERS))
    args["lr_scheduler_type"] = name
    if kwargs:
        args["lr_scheduler_kwargs"] = kwargs
    if cfg.warmup_steps is not None:
        args["warmup_steps"] = cfg.warmup_steps
    elif cfg.warmup_ratio is not None:
        args["warmup_steps"] = cfg.warmup_ratio  # transformers 5 reads a float in [0, 1) as a ratio


def _interval(value: int | float, steps_per_epoch: int, total: int) -> int:
    if isinstance(value, float) and value < 1:
        return max(1, int(value * total))
    return max(1, int(value))


def _evaluation(cfg: Any, args: dict[str, Any], steps_per_epoch: int, has_eval: bool) -> None:
    strategy = cfg.eval_strategy or cfg.evaluation_strategy
    if not has_eval or strategy == "no":
        args["eval_strategy"] = "no"
        return
    total = args["max_steps"] if args["max_steps"] > 0 else steps_per_epoch * cfg.num_epochs
    if cfg.eval_steps:
        args["eval_strategy"] = "steps"
        args["eval_steps"] = _interval(cfg.eval_steps, steps_per_epoch, int(total))
    elif cfg.evals_per_epoch:
        args["eval_strategy"] = "steps"
        args["eval_steps"] = max(1, steps_per_epoch // cfg.evals_per_epoch)
    else:
        args["eval_strategy"] = strategy or "epoch"


def _saving(cfg: Any, args: dict[str, Any], steps_per_epoch: int) -> None:
    total = args["max_steps"] if args["max_steps"] > 0 else steps_per_epoch * cfg.num_epochs
    if cfg.save_strategy == "no":
        args["save_strategy"] = "no"
    elif cfg.save_steps:
        args["save_strategy"] = "steps"
        args["save_steps"] = _interval(cfg.save_steps, steps_per_epoch, int(total))
    elif cfg.saves_per_epoch:
        args["save_strategy"] = "steps"
        args["save_steps"] = max(1, steps_per_epoch // cfg.saves_per_epoch)
    else:
        args["save_strategy"] = cfg.save_strategy or "epoch"
    if cfg.load_best_model_at_end or cfg.early_stopping_patience:
        args["metric_for_best_model"] = cfg.metric_for_best_model or "eval_loss"
        if cfg.greater_is_better is not None:
            args["greater_is_better"] = cfg.greater_is_better
        if args["eval_strategy"] == "no":
            raise UserError("early_stopping_patience/load_best_model_at_end need evaluation data",
                            hint="set val_set_size > 0 or test_datasets")
        if args["save_strategy"] != "no" and args["eval_strategy"] != args["save_strategy"] and \
                cfg.load_best_model_at_end:
            raise UserError("load_best_model_at_end needs the same eval and save schedule",
                            hint="set save_steps equal to eval_steps (or both per epoch)")


def _extras(cfg: Any, args: dict[str, Any], precision: Precision) -> None:
    alpha = cfg.neftune_noise_alpha or cfg.noisy_embedding_alpha
    if alpha:
        args["neftune_noise_alpha"] = alpha
    if cfg.group_by_length:
        args["train_sampling_strategy"] = "group_by_length"
    compile_on = cfg.torch_compile is True or (cfg.torch_compile == "auto" and precision.device == "cuda")
    if compile_on:
        args["torch_compile"] = True
        if cfg.torch_compile_backend:
            args["torch_compile_backend"] = cfg.torch_compile_backend
        if cfg.torch_compile_mode:
            args["torch_compile_mode"] = cfg.torch_compile_mode
    for key in ("ddp_timeout", "ddp_bucket_cap_mb", "ddp_broadcast_buffers"):
        if getattr(cfg, key) is not None:
            args[key] = getattr(cfg, key)
    if cfg.fsdp or cfg.fsdp_config:
        args["fsdp"] = " ".join(cfg.fsdp or ["full_shard", "auto_wrap"])
        fsdp_config = dict(cfg.fsdp_config or {})
        if cfg.fsdp_version:
            fsdp_config.setdefault("version", cfg.fsdp_version)
        args["fsdp_config"] = fsdp_config
    if cfg.deepspeed:
        args["deepspeed"] = cfg.deepspeed


def _ddp(cfg: Any, args: dict[str, Any], env: Env) -> None:
    """DDP's ``find_unused_parameters`` only when the config asks for it, as Axolotl does.

    Left unset, transformers turns it on for any model without gradient checkpointing: every step then walks the
    autograd graph once more and torch warns that no unused parameter was found. A LoRA or full fine-tune uses all
    of its trainable parameters, and reentrant checkpointing even fails with it on ("marked ready twice"). Models
    that really skip trainable parameters in a step (MoE experts that get no tokens, towers unused by text-only data)
    need ``ddp_find_unused_parameters: true``.
    """
    if cfg.ddp_find_unused_parameters is not None:
        args["ddp_find_unused_parameters"] = bool(cfg.ddp_find_unused_parameters)
    elif env.world_size > 1:
        args["ddp_find_unused_parameters"] = False


def tracker_env(cfg: Any) -> dict[str, str]:
    """Environment variables the wandb / mlflow integrations read (values from the config; no secrets)."""
    pairs = {
        "WANDB_PROJECT": cfg.wandb_project,
        "WANDB_ENTITY": cfg.wandb_entity,
        "WANDB_RUN_ID": cfg.wandb_run_id,
        "WANDB_MODE": cfg.wandb_mode,
        "WANDB_WATCH": cfg.wandb_watch,
        "WANDB_LOG_MODEL": cfg.wandb_log_model,
        "MLFLOW_TRACKING_URI": cfg.mlflow_tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": cfg.mlflow_experiment_name,
        "HF_MLFLOW_LOG_ARTIFACTS": None if cfg.hf_mlflow_log_artifacts is None else str(cfg.hf_mlflow_log_artifacts),
    }
    return {k: str(v) for k, v in pairs.items() if v}


def apply_env(variables: dict[str, str]) -> None:
    for key, value in variables.items():
        os.environ.setdefault(key, value)
