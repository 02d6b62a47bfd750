"""Multi-device keys: FSDP, DeepSpeed, context parallelism, DDP knobs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from mudpuppy.launcher.config.schema.base import Section


class DistributedSection(Section):
    fsdp: list[str] | None = None
    fsdp_config: dict[str, Any] | None = None
    fsdp_version: Literal[1, 2] | None = None
    fsdp_final_state_dict_type: Literal["FULL_STATE_DICT", "LOCAL_STATE_DICT", "SHARDED_STATE_DICT"] | None = None
    deepspeed: str | dict[str, Any] | None = Field(
        None, description="zero1|zero2|zero3|zero3_offload, or a path to a DeepSpeed JSON."
    )
    context_parallel_size: int | None = Field(None, ge=1)
    sequence_parallel_degree: int | None = Field(None, ge=1)
    heads_k_stride: int | None = Field(None, ge=1)
    ring_attn_func: str | None = Field(
        None, description="Context-parallel exchange: allgather (default), ulysses, or Axolotl's ring names."
    )
    ddp_timeout: int | None = None
    ddp_bucket_cap_mb: int | None = None
    ddp_broadcast_buffers: bool | None = None
    ddp_find_unused_parameters: bool | None = None
