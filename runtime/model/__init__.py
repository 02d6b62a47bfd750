"""Model building: precision resolution, loading (full/quantised), adapters, freezing, kernels."""

from __future__ import annotations

from typing import Any

from mudpuppy.runtime.model.precision import Precision, resolve_precision

__all__ = ["Precision", "build_model", "resolve_precision"]


def build_model(cfg: Any, tokenizer: Any, precision: Precision, *, training: bool = True) -> tuple[Any, list[str]]:
    """The model ready to train: base + adapter (or frozen per ``unfrozen_parameters``) + kernels.

    Returns the model and the names of the kernels that were swapped in (each announced once in the log).
    """
    from mudpuppy.runtime.model.adapter import apply_adapter
    from mudpuppy.runtime.model.loader import freeze_for_unfrozen_parameters, load_model

    model = load_model(cfg, tokenizer, precision, training=training)
    if cfg.unfrozen_parameters and not cfg.adapter:
        freeze_for_unfrozen_parameters(model, cfg.unfrozen_parameters)
    model = apply_adapter(cfg, model, training=training)
    if training:
        from mudpuppy.runtime.model.multimodal import freeze_media, freezes_media

        if freezes_media(cfg):  # after the adapter, as Axolotl: an adapter inside a tower is frozen too
            freeze_media(model)
    if cfg.unfrozen_parameters and cfg.adapter:
        # with an adapter the regexes unfreeze base parameters in addition to the LoRA weights
        import re

        for name, param in model.named_parameters():
            if any(re.search(p, name) for p in cfg.unfrozen_parameters):
                param.requires_grad = True
    if training and cfg.adapter and precision.mode == "fp16":
        upcast_trainable(model)
    kernels = _apply_kernels(model, cfg)
    return model, kernels


def upcast_trainable(model: Any) -> int:
    """fp16 + adapter: every trainable tensor in fp32 (the frozen base stays fp16); returns how many were cast.

    The fp16 path trains with a GradScaler, and ``GradScaler.unscale_`` refuses fp16 gradients. peft keeps the
    LoRA weights in fp32, but ``lora_modules_to_save`` copies and base parameters re-enabled by
    ``unfrozen_parameters`` keep the base's fp16.
    """
    import torch

    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype == torch.float16:
            param.data = param.data.float()
            cast += 1
    return cast


def _apply_kernels(model: Any, cfg: Any) -> list[str]:
    from mudpuppy.kernels.apply import apply_kernels

    applied: list[str] = apply_kernels(model, cfg)
    return applied
