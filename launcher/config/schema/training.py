"""Optimisation, schedule, evaluation, saving and resume keys."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from mudpuppy.launcher.config.schema.base import Section


class TrainingSection(Section):
    micro_batch_size: int | None = Field(1, ge=1)
    eval_batch_size: int | None = Field(None, ge=1)
    gradient_accumulation_steps: int | None = Field(1, ge=1)
    batch_size: int | None = Field(None, ge=1)
    num_epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0)
    learning_rate: float = Field(ge=0.0, description="Peak learning rate.")
    embedding_lr: float | None = None
    embedding_lr_scale: float | None = None
    optimizer: str | None = "adamw_torch_fused"
    optim_args: str | dict[str, Any] | None = None
    optim_target_modules: list[str] | Literal["all_linear"] | None = None
    weight_decay: float | None = 0.0
    adam_beta1: float | None = None
    adam_beta2: float | None = None
    adam_epsilon: float | None = None
    max_grad_norm: float | None = None
    lr_scheduler: str | None = "cosine"
    lr_scheduler_kwargs: dict[str, Any] | None = None
    cosine_min_lr_ratio: float | None = Field(None, ge=0.0, le=1.0)
    cosine_constant_lr_ratio: float | None = Field(None, ge=0.0, le=1.0)
    warmup_steps: int | None = Field(None, ge=0)
    warmup_ratio: float | None = Field(None, ge=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="numpy and torch both take seeds in [0, 2**32).")
    group_by_length: bool | None = None
    neftune_noise_alpha: float | None = None
    noisy_embedding_alpha: float | None = None
    loss_watchdog_threshold: float | None = None
    loss_watchdog_patience: int | None = None
    torch_compile: bool | Literal["auto"] | None = None
    torch_compile_backend: str | None = None
    torch_compile_mode: Literal["default", "reduce-overhead", "max-autotune"] | None = None

    logging_steps: int | None = Field(None, ge=1)
    eval_steps: int | float | None = None
    evals_per_epoch: int | None = Field(None, ge=0)
    eval_strategy: str | None = None
    evaluation_strategy: str | None = None
    save_steps: int | float | None = None
    saves_per_epoch: int | None = Field(None, ge=1)
    save_strategy: str | None = None
    save_total_limit: int | None = Field(None, ge=1)
    save_only_model: bool | None = False
    save_safetensors: bool | None = True
    save_first_step: bool | None = None
    early_stopping_patience: int | None = Field(None, ge=1)
    load_best_model_at_end: bool | None = False
    metric_for_best_model: str | None = None
    greater_is_better: bool | None = None
    include_tokens_per_second: bool | None = None

    output_dir: str = "./model-out"
    resume_from_checkpoint: str | None = None
    auto_resume_from_checkpoints: bool | None = None

    dataloader_num_workers: int | None = None
    dataloader_pin_memory: bool | None = None
    dataloader_prefetch_factor: int | None = None
    dataloader_drop_last: bool | None = None
    remove_unused_columns: bool | None = None
    strict: bool | None = Field(False, description="true: --key overrides may only change keys the file has.")

    @field_validator("save_strategy", "eval_strategy", "evaluation_strategy", mode="before")
    @classmethod
    def _yaml_no_means_no(cls, value: Any) -> Any:
        """YAML 1.1 reads an unquoted ``no`` as false; ``save_strategy: no`` means the strategy "no"."""
        return "no" if value is False else value

    @field_validator("output_dir")
    @classmethod
    def _output_dir_names_a_folder(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("empty_output_dir", "must name a folder (the default is ./model-out)")
        return value
