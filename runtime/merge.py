"""``merge-lora``: fold a trained LoRA adapter into its base weights and save a plain HF model in OUT/merged.

The base is rebuilt exactly as training built it (same loader, same seed for ``reinit_weights``), so the merged
model's logits equal base+adapter logits. Runs on CPU when ``lora_on_cpu`` is set (or no GPU is present);
written to a staging folder and renamed, like checkpoints.
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


def load_base_and_tokenizer(cfg: Any, *, on_cpu: bool, tokenizer_dir: Path | None = None) -> tuple[Any, Any, Any]:
    from mudpuppy.runtime.model.loader import load_model
    from mudpuppy.runtime.model.precision import resolve_precision
    from mudpuppy.runtime.tokenizer import load_tokenizer

    precision = resolve_precision(cfg, device="cpu" if on_cpu else None)
    base_cfg = cfg.model_copy(update={"load_in_4bit": False, "load_in_8bit": False, "adapter": None})
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
    model, tokenizer, _ = load_base_and_tokenizer(cfg, on_cpu=on_cpu, tokenizer_dir=source)
    peft_model = PeftModel.from_pretrained(model, str(source))
    merged = peft_model.merge_and_unload()
    target = Path(out_dir or cfg.output_dir) / "merged"
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    merged.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())
