"""Sharded (``torch.distributed.checkpoint``) FSDP weights -> one safetensors model, on CPU, in one process.

A SHARDED_STATE_DICT checkpoint holds ``*.distcp`` files plus ``.metadata``, written by N ranks; it can be read
back by any number of ranks, including one without a process group (``no_dist``). This reads the model part
(accelerate writes it under ``pytorch_model_fsdp_0/`` with the tensors nested under ``model``), optionally casts
floating tensors to bf16, and writes ``model.safetensors`` (split into ``model-0000x-of-0000y.safetensors`` plus an
index above ``max_shard_size``) next to the checkpoint's config, so ``from_pretrained`` loads it directly.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from mudpuppy.launcher.errors import UserError

MODEL_DIR_NAMES = ("pytorch_model_fsdp_0", "model")
COPY_NEXT_TO_WEIGHTS = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                        "special_tokens_map.json", "chat_template.jinja", "adapter_config.json")


def find_model_shards(checkpoint_dir: Path) -> Path:
    """The folder holding the model's ``.metadata`` inside a checkpoint (or the checkpoint itself)."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise UserError(f"{checkpoint_dir}: no such checkpoint folder")
    for candidate in (*(checkpoint_dir / n for n in MODEL_DIR_NAMES), checkpoint_dir):
        if (candidate / ".metadata").is_file():
            return candidate
    raise UserError(f"{checkpoint_dir}: no sharded FSDP weights (no .metadata in it or in pytorch_model_fsdp_0/)",
                    hint="point at a checkpoint-N folder written with fsdp_config.state_dict_type: "
                         "SHARDED_STATE_DICT")


def load_sharded_state_dict(shards: Path) -> dict[str, Any]:
    """Everything in the checkpoint, materialised on CPU without a process group.

    ``dcp.load`` fills only keys it is given, so an empty dict comes back empty; torch's own DCP -> torch.save
    converter (``format_utils.dcp_to_torch_save``) reads through ``_load_state_dict`` with the empty-dict planner,
    and so do we, minus its temporary file.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    state: dict[str, Any] = {}
    try:
        _load_state_dict(state, storage_reader=dcp.FileSystemReader(str(shards)),
                         planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    except Exception as exc:  # corrupt/missing shard files surface as a variety of errors
        raise UserError(f"{shards}: could not read the sharded checkpoint: {str(exc).splitlines()[0][:200]}") from None
    return state


def model_tensors(state: dict[str, Any]) -> dict[str, Any]:
    """Flatten to ``name -> tensor``: unwrap accelerate's ``{"model": ...}`` nesting, drop non-tensors."""
    import torch

    if isinstance(state.get("model"), dict):  # accelerate: {"model": ...}; ours: {"model": ..., "optim": ...}
        state = state["model"]
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        elif isinstance(node, torch.Tensor):
            out[prefix] = node

    walk("", state)
    if not out:
        raise UserError("the sharded checkpoint holds no model tensors")
    return out


def merge_sharded_weights(checkpoint_dir: Path, output_dir: Path | None = None, *, dtype: str | None = None,
                          max_shard_size: str = "5GB") -> Path:
    import torch
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    checkpoint_dir = Path(checkpoint_dir)
    shards = find_model_shards(checkpoint_dir)
    tensors = model_tensors(load_sharded_state_dict(shards))
    if dtype is not None:
        target = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
                  "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}.get(dtype)
        if target is None:
            raise UserError(f"--dtype {dtype!r}: use bf16, fp16 or fp32")
        tensors = {k: v.to(target) if v.is_floating_point() else v for k, v in tensors.items()}
    tensors = {k: v.contiguous() for k, v in tensors.items()}

    out = Path(output_dir) if output_dir is not None else checkpoint_dir / "merged"
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    split = split_torch_state_dict_into_shards(tensors, filename_pattern="model{suffix}.safetensors",
                                               max_shard_size=max_shard_size)
    for filename, names in split.filename_to_tensors.items():
        save_file({n: tensors[n] for n in names}, str(staging / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (staging / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    for name in COPY_NEXT_TO_WEIGHTS:
        for source in (checkpoint_dir / name, checkpoint_dir.parent / name):
            if source.is_file():
                shutil.copy2(source, staging / name)
                break
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return out
