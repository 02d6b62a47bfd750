"""``merge-lora``: fold a trained LoRA adapter into its base weights and save a plain HF model in OUT/merged.

The base is rebuilt exactly as training built it (same loader, same seed for ``reinit_weights``), so the merged
model's logits equal base+adapter logits. Runs on CPU when ``lora_on_cpu`` is set (or no GPU is present);
written to a staging folder and renamed, like checkpoints.

The merged model is written in the training dtype (bf16/fp16 as the config says; ``auto`` as it resolves on this
machine), not fp32 at twice the size. On CPU the merge itself runs in fp32 (CPU has no fast fp16 and an fp16
config cannot even resolve there) and the result is cast once at the end; on a GPU it runs in that dtype.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from mudpuppy.launcher.errors import UserError


def adapter_dir(cfg: Any, lora_model_dir: str | None = None) -> Path:
    path = Path(lora_model_dir or cfg.lora_model_dir or cfg.output_dir)
    if not (path / "adapter_config.json").is_file():
        raise UserError(f"no LoRA adapter in {str(path)!r} (adapter_config.json missing)",
                        hint="train first, or pass --lora-model-dir DIR")
    return path


def merge_dtype(cfg: Any) -> Any:
    """The dtype training ran in: what the config asks, ``auto`` resolved against this machine's device."""
    import torch

    from mudpuppy.runtime.model.precision import resolve_precision

    mode = cfg.precision()
    if mode == "auto":
        mode = resolve_precision(cfg).mode
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[mode]


def load_base_and_tokenizer(cfg: Any, *, on_cpu: bool, tokenizer_dir: Path | None = None,
                            dtype: Any = None) -> tuple[Any, Any, Any]:
    """The base model as training built it (no quantisation, no adapter); ``dtype`` forces the weights' dtype."""
    from mudpuppy.runtime.model.loader import load_model
    from mudpuppy.runtime.model.precision import Precision, resolve_precision
    from mudpuppy.runtime.tokenizer import load_tokenizer

    if on_cpu and cfg.precision() == "fp16":  # resolve_precision refuses fp16 on CPU; load fp32 there
        precision = Precision(mode="fp32", tf32=False, device="cpu")
    else:
        precision = resolve_precision(cfg, device="cpu" if on_cpu else None)
    update: dict[str, Any] = {"load_in_4bit": False, "load_in_8bit": False, "adapter": None}
    if dtype is not None:
        update["overrides_of_model_kwargs"] = {**(cfg.overrides_of_model_kwargs or {}), "dtype": dtype}
    base_cfg = cfg.model_copy(update=update)
    tokenizer = _trained_tokenizer(tokenizer_dir) if tokenizer_dir else None
    if tokenizer is None:
        tokenizer = load_tokenizer(cfg)
    model = load_model(base_cfg, tokenizer, precision, training=False)
    if on_cpu:
        model = model.to("cpu")
    return model, tokenizer, precision


def _trained_tokenizer(path: Path) -> Any:
    """The tokenizer saved next to the trained weights (it carries the chat template used in training)."""
    if not (path / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def merge_lora(cfg: Any, lora_model_dir: str | None = None, out_dir: str | None = None) -> Path:
    from peft import PeftModel

    source = adapter_dir(cfg, lora_model_dir)
    on_cpu = bool(cfg.lora_on_cpu) or not _cuda()
    import torch

    dtype = merge_dtype(cfg)
    model, tokenizer, _ = load_base_and_tokenizer(cfg, on_cpu=on_cpu, tokenizer_dir=source,
                                                  dtype=torch.float32 if on_cpu else dtype)
    peft_model = PeftModel.from_pretrained(model, str(source))
    merged = peft_model.merge_and_unload().to(dtype)
    target = Path(out_dir or cfg.output_dir) / "merged"
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    merged.save_pretrained(str(staging))
    if cfg.processor_type:  # a multimodal model needs its processor (image settings + tokenizer) next to it
        from mudpuppy.runtime.model.multimodal import load_processor

        load_processor(cfg, tokenizer).save_pretrained(str(staging))
    else:
        tokenizer.save_pretrained(str(staging))
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())
