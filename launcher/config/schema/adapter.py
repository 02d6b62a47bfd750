"""LoRA / QLoRA adapter keys."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mudpuppy.launcher.config.schema.base import Section


class LoftQConfig(Section):
    loftq_bits: int = 4


class PeftConfig(Section):
    loftq_config: LoftQConfig | None = None


class AdapterSection(Section):
    adapter: Literal["lora", "qlora"] | None = Field(None, description="Omit for a full fine-tune.")
    lora_model_dir: str | None = Field(None, description="An adapter to continue training from.")
    lora_r: int | None = Field(None, gt=0)
    lora_alpha: int | float | None = None
    lora_dropout: float | None = Field(0.0, ge=0.0, lt=1.0)
    lora_target_modules: str | list[str] | None = None
    lora_target_linear: bool | None = None
    lora_modules_to_save: list[str] | None = None
    lora_fan_in_fan_out: bool | None = None
    lora_on_cpu: bool | None = None
    peft_layers_to_transform: list[int] | None = None
    peft_layers_pattern: list[str] | None = None
    peft_use_dora: bool | None = None
    peft_use_rslora: bool | None = None
    peft_init_lora_weights: bool | str | None = None
    peft: PeftConfig | None = None
    loraplus_lr_ratio: float | None = None
    loraplus_lr_embedding: float | None = 1e-6
    merge_lora: bool | None = None
    lora_mlp_kernel: bool | None = None
    lora_qkv_kernel: bool | None = None
    lora_o_kernel: bool | None = None
