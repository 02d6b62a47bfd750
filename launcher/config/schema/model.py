"""Model, tokenizer, precision and attention keys (Axolotl names and meanings)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from mudpuppy.launcher.config.schema.base import Section


class SpecialTokens(Section):
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    unk_token: str | None = None
    additional_special_tokens: list[str] | None = None


class ModelSection(Section):
    base_model: str = Field(description="Local folder or hub id of the model to fine-tune.")
    base_model_config: str | None = Field(None, description="Folder or hub id to read config.json from.")
    revision_of_model: str | None = None
    model_type: str | None = Field(None, description="transformers Auto class, e.g. AutoModelForCausalLM.")
    type_of_model: str | None = Field(None, description="Alias of model_type kept for old Axolotl configs.")
    tokenizer_config: str | None = None
    tokenizer_type: str | None = None
    tokenizer_use_fast: bool | None = None
    tokenizer_legacy: bool | None = None
    tokenizer_save_jinja_files: bool | None = Field(True, description="False: chat template inside tokenizer_config.")
    trust_remote_code: bool | None = None
    overrides_of_model_config: dict[str, Any] | None = None
    overrides_of_model_kwargs: dict[str, Any] | None = None
    resize_token_embeddings_to_32x: bool | None = None
    mean_resizing_embeddings: bool | None = False
    reinit_weights: bool | None = Field(
        None, description="Initialise weights from the model config instead of loading them (tiny/debug models)."
    )
    special_tokens: SpecialTokens | None = None
    tokens: list[str] | None = None
    added_tokens_overrides: dict[int, str] | None = None
    chat_template: str | None = None
    chat_template_jinja: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    eot_tokens: list[str] | None = None
    default_system_message: str | None = None

    attn_implementation: str | None = None
    flash_attention: bool | None = None
    sdp_attention: bool | None = None
    flex_attention: bool | None = None
    eager_attention: bool | None = None

    bf16: bool | Literal["auto"] | None = "auto"
    fp16: bool | None = None
    tf32: bool | Literal["auto"] | None = "auto"
    bfloat16: bool | None = None
    float16: bool | None = None
    float32: bool | None = None
    load_in_8bit: bool | None = False
    load_in_4bit: bool | None = False
    bnb_config_kwargs: dict[str, Any] | None = None
    device_map: Any = None
    max_memory: dict[int | str, int | str] | None = None
    low_cpu_mem_usage: bool | None = None

    gradient_checkpointing: bool | Literal["offload", "offload_disk"] | None = False
    gradient_checkpointing_kwargs: dict[str, Any] | None = None
    unfrozen_parameters: list[str] | None = None

    def resolved_model_type(self) -> str:
        return self.model_type or self.type_of_model or "AutoModelForCausalLM"

    def attention_implementation(self) -> str | None:
        """Map Axolotl's boolean attention flags onto transformers' ``attn_implementation``."""
        if self.attn_implementation:
            return self.attn_implementation
        if self.flex_attention:  # Axolotl's priority among the legacy flags: flex, flash, sdp, eager
            return "flex_attention"
        if self.flash_attention:
            return "flash_attention_2"
        if self.sdp_attention:
            return "sdpa"
        if self.eager_attention:
            return "eager"
        return None
