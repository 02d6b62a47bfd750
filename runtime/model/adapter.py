"""LoRA / QLoRA adapters through peft, from Axolotl's ``lora_*`` / ``peft_*`` keys.

``lora_target_linear`` means every ``nn.Linear`` (or bitsandbytes linear) except the output head, which is what
Axolotl does; explicit ``lora_target_modules`` are added to that set. ``lora_model_dir`` continues training an
existing adapter instead of creating a new one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mudpuppy.launcher.errors import UserError

_HEAD_NAMES = ("lm_head", "embed_out", "output_layer", "score")


def lora_config(cfg: Any, model: Any) -> Any:
    from peft import LoftQConfig, LoraConfig

    targets = target_modules(cfg, model)
    kwargs: dict[str, Any] = {
        "r": cfg.lora_r,
        "lora_alpha": cfg.lora_alpha if cfg.lora_alpha is not None else cfg.lora_r,
        "lora_dropout": cfg.lora_dropout or 0.0,
        "target_modules": targets,
        "bias": "none",
        "task_type": task_type(model),
    }
    if cfg.lora_modules_to_save:
        kwargs["modules_to_save"] = list(cfg.lora_modules_to_save)
    if cfg.peft_layers_to_transform:
        kwargs["layers_to_transform"] = list(cfg.peft_layers_to_transform)
    if cfg.peft_layers_pattern:
        kwargs["layers_pattern"] = list(cfg.peft_layers_pattern)
    if cfg.lora_fan_in_fan_out is not None:
        kwargs["fan_in_fan_out"] = bool(cfg.lora_fan_in_fan_out)
    if cfg.peft_use_dora:
        kwargs["use_dora"] = True
    if cfg.peft_use_rslora:
        kwargs["use_rslora"] = True
    if cfg.peft_init_lora_weights is not None:
        kwargs["init_lora_weights"] = cfg.peft_init_lora_weights
    if cfg.peft and cfg.peft.loftq_config:
        kwargs["init_lora_weights"] = "loftq"
        kwargs["loftq_config"] = LoftQConfig(loftq_bits=cfg.peft.loftq_config.loftq_bits)
    return LoraConfig(**kwargs)


def task_type(model: Any) -> str:
    """Classification heads (reward / process reward models) get peft's SEQ_CLS / TOKEN_CLS, which also trains
    and saves the new head, as Axolotl picks them; everything else is CAUSAL_LM."""
    name = type(model).__name__
    if "SequenceClassification" in name:
        return "SEQ_CLS"
    if "TokenClassification" in name:
        return "TOKEN_CLS"
    return "CAUSAL_LM"


def target_modules(cfg: Any, model: Any) -> list[str] | str:
    """peft's ``target_modules``: a string is one regex over full module names (as Axolotl passes it, e.g.
    ``model.language_model.layers.[\\d]+.(mlp|self_attn).(up|down|gate|q|k|v|o)_proj``), a list holds names."""
    import re

    from mudpuppy.runtime.model.multimodal import freezes_media, lora_targets

    explicit = cfg.lora_target_modules
    if isinstance(explicit, str) and not cfg.lora_target_linear and not re.fullmatch(r"\w+", explicit):
        return explicit  # a plain name (q_proj) stays a name: peft's regex would need the full module path
    if isinstance(explicit, str):
        explicit = [explicit]
    if cfg.lora_target_linear and freezes_media(cfg):  # no adapter on towers that stay frozen
        from mudpuppy.runtime.model.multimodal import is_media_parameter

        leaves = linear_module_names(model, keep=lambda name: not is_media_parameter(name))
        return lora_targets(leaves, list(explicit or []))
    names = set(explicit or [])
    if cfg.lora_target_linear:
        names |= linear_module_names(model)
    if not names:
        raise UserError("adapter: lora needs lora_target_modules or lora_target_linear: true")
    return sorted(names)


def linear_module_names(model: Any, keep: Any = None) -> set[str]:
    """Leaf names of the linear layers (``keep(full_name)`` filters which layers count)."""
    import torch

    linear_types: tuple[type, ...] = (torch.nn.Linear,)
    try:
        import bitsandbytes as bnb

        linear_types += (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    except ImportError:
        pass
    names = set()
    for full_name, module in model.named_modules():
        if isinstance(module, linear_types) and (keep is None or keep(full_name)):
            leaf = full_name.split(".")[-1]
            if leaf not in _HEAD_NAMES:
                names.add(leaf)
    return names


def apply_adapter(cfg: Any, model: Any, *, training: bool = True) -> Any:
    """Wrap ``model`` in a peft adapter when the config asks for one; otherwise return it unchanged."""
    if not cfg.adapter:
        return model
    from peft import PeftModel, get_peft_model

    if cfg.lora_model_dir:
        path = Path(cfg.lora_model_dir)
        if not (path / "adapter_config.json").is_file():
            raise UserError(f"lora_model_dir: {cfg.lora_model_dir!r} has no adapter_config.json",
                            hint="point it at a folder written by a LoRA run (its output_dir)")
        return PeftModel.from_pretrained(model, str(path), is_trainable=training)
    peft_model = get_peft_model(model, lora_config(cfg, model))
    return peft_model
