"""Build the model a config asks for: from a folder or hub id, or from its config (``reinit_weights``).

Axolotl's model keys map onto transformers' own loading arguments here and nowhere else: the Auto class
(``model_type``), config overrides (incl. rope_scaling), attention implementation, dtype, device map, memory
limits, quantisation (bitsandbytes, CUDA only), embedding resizing for added tokens and ``unfrozen_parameters``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.model.precision import Precision

log = logging.getLogger("mudpuppy.runtime.model")


def load_model(cfg: Any, tokenizer: Any, precision: Precision, *, training: bool = True,
               env: Any = None) -> Any:
    """The base model (no adapter yet), embeddings sized to the tokenizer, ready for peft or a full fine-tune.

    ``env`` (default: read from the environment) places each torchrun rank on its own GPU before anything is
    loaded; bitsandbytes quantises onto the current device, so without it every rank's copy landed on cuda:0.
    """
    import torch
    import transformers

    from mudpuppy.runtime.env import read_env

    env = env or read_env()
    if precision.device == "cuda" and torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank)

    auto_cls = getattr(transformers, cfg.resolved_model_type(), None)
    if auto_cls is None or not hasattr(auto_cls, "from_pretrained"):
        raise UserError(
            f"model_type: {cfg.resolved_model_type()!r} is not a transformers model class",
            hint="use e.g. AutoModelForCausalLM",
        )
    config = load_model_config(cfg)
    kwargs = model_kwargs(cfg, precision, local_rank=env.local_rank)
    if weights_come_from_rank0() and not (cfg.load_in_4bit or cfg.load_in_8bit):
        model = _skeleton(auto_cls, config, kwargs)
    elif cfg.reinit_weights:
        torch.manual_seed(cfg.seed if cfg.seed is not None else 42)
        kwargs = {k: v for k, v in kwargs.items() if k in ("dtype", "attn_implementation", "trust_remote_code")}
        model = auto_cls.from_config(config, **kwargs)
    else:
        _check_local(cfg.base_model, "base_model")
        try:
            model = auto_cls.from_pretrained(cfg.base_model, config=config, **kwargs)
        except OSError as exc:
            raise UserError(f"base_model: could not load {cfg.base_model!r}: {_first_line(exc)}") from None
    resize_embeddings(cfg, model, tokenizer)
    if training:
        model.config.use_cache = False
        if cfg.load_in_4bit or cfg.load_in_8bit:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=bool(cfg.gradient_checkpointing),
                gradient_checkpointing_kwargs=cfg.gradient_checkpointing_kwargs or {"use_reentrant": False},
            )
    return model


def weights_come_from_rank0() -> bool:
    """FSDP ``cpu_ram_efficient_loading`` on a rank other than local rank 0: transformers' own predicate.

    ``parallel.before_model_load`` sets the variables and the process group it reads before any model exists.
    """
    from transformers.distributed.utils import is_local_dist_rank_0
    from transformers.integrations import is_fsdp_enabled

    return bool(is_fsdp_enabled() and not is_local_dist_rank_0())


def _skeleton(auto_cls: Any, config: Any, kwargs: dict[str, Any]) -> Any:
    """The model with parameters on the meta device (no host RAM) and real non-persistent buffers (rotary tables).

    transformers keeps missing weights on meta on these ranks under FSDP; an empty state dict makes every weight
    missing, so nothing is read. accelerate then shards the skeleton and broadcasts rank 0's weights into it.
    """
    from transformers.models.auto.auto_factory import _get_model_class
    from transformers.utils import logging as hf_logging

    model_cls = _get_model_class(config, auto_cls._model_mapping)
    keep = {k: v for k, v in kwargs.items() if k in ("dtype", "attn_implementation", "trust_remote_code")}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "every key MISSING" load report is expected here
    try:
        return model_cls.from_pretrained(None, config=config, state_dict={}, **keep)
    finally:
        hf_logging.set_verbosity(verbosity)


def load_model_config(cfg: Any) -> Any:
    from transformers import AutoConfig

    source = cfg.base_model_config or cfg.base_model
    _check_local(source, "base_model_config" if cfg.base_model_config else "base_model")
    try:
        config = AutoConfig.from_pretrained(
            source, revision=cfg.revision_of_model, trust_remote_code=bool(cfg.trust_remote_code)
        )
    except (OSError, ValueError) as exc:
        raise UserError(f"base_model: could not read the model config of {source!r}: {_first_line(exc)}") from None
    if cfg.resolved_num_labels() is not None:
        config.num_labels = cfg.resolved_num_labels()
    for key, value in (cfg.overrides_of_model_config or {}).items():
        if key == "rope_scaling" and isinstance(value, dict) and hasattr(config, "rope_parameters"):
            config.rope_parameters = rope_parameters(getattr(config, "rope_parameters", None), value)
        else:
            setattr(config, key, value)
    return config


def rope_parameters(current: dict[str, Any] | None, scaling: dict[str, Any]) -> dict[str, Any]:
    """Axolotl's ``rope_scaling: {type: linear, factor: 2}`` in transformers 5's ``rope_parameters`` form."""
    merged = dict(current or {})
    extra = dict(scaling)
    kind = extra.pop("rope_type", None) or extra.pop("type", None)
    if kind:
        merged["rope_type"] = kind
    merged.update(extra)
    return merged


def model_kwargs(cfg: Any, precision: Precision, *, local_rank: int = 0) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for the config (pure apart from building the bnb config).

    k-bit models on CUDA without a ``device_map`` go whole onto this rank's GPU (``{"": local_rank}``), as
    Axolotl does: bitsandbytes quantises while loading, onto the device it is given.
    """
    kwargs: dict[str, Any] = {
        "dtype": precision.torch_dtype if (cfg.adapter or precision.mode == "bf16") else _full_ft_dtype(precision),
        "trust_remote_code": bool(cfg.trust_remote_code),
    }
    if cfg.revision_of_model:
        kwargs["revision"] = cfg.revision_of_model
    attn = cfg.attention_implementation()
    if attn:
        kwargs["attn_implementation"] = attn
    if cfg.device_map is not None:
        kwargs["device_map"] = cfg.device_map
    if cfg.max_memory:
        kwargs["max_memory"] = cfg.max_memory
    if cfg.low_cpu_mem_usage is not None:
        kwargs["low_cpu_mem_usage"] = cfg.low_cpu_mem_usage
    if cfg.load_in_4bit or cfg.load_in_8bit:
        kwargs["quantization_config"] = quantization_config(cfg, precision)
        if cfg.device_map is None:
            kwargs["device_map"] = {"": local_rank}
    kwargs.update(cfg.overrides_of_model_kwargs or {})
    return kwargs


def _full_ft_dtype(precision: Precision) -> Any:
    import torch

    # fp16 full fine-tunes keep fp32 master weights (AMP); bf16 trains in bf16 as Axolotl does.
    return torch.float32


def quantization_config(cfg: Any, precision: Precision) -> Any:
    key = "load_in_4bit" if cfg.load_in_4bit else "load_in_8bit"
    if precision.device != "cuda":
        raise UserError(f"{key}: bitsandbytes quantisation needs a CUDA GPU; skipped on {precision.device}",
                        hint="remove load_in_4bit/load_in_8bit (and use adapter: lora) to train on this machine")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError(f"{key} needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    if cfg.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True, **(cfg.bnb_config_kwargs or {}))
    options: dict[str, Any] = {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": precision.torch_dtype,
        "bnb_4bit_quant_storage": precision.torch_dtype,
    }
    options.update(cfg.bnb_config_kwargs or {})
    return BitsAndBytesConfig(**options)


def resize_embeddings(cfg: Any, model: Any, tokenizer: Any) -> None:
    """Grow (never shrink) the embeddings to fit added tokens; round up to 32 when asked; align special ids."""
    if tokenizer is None:
        return
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            setattr(model.config, name, value)
            if getattr(model, "generation_config", None) is not None:
                setattr(model.generation_config, name, value)
    current = model.get_input_embeddings().num_embeddings
    wanted = len(tokenizer)
    multiple = 32 if cfg.resize_token_embeddings_to_32x else None
    if multiple:
        wanted = -(-wanted // multiple) * multiple
    if wanted > current or (multiple and current % multiple):
        model.resize_token_embeddings(
            max(wanted, current), pad_to_multiple_of=multiple, mean_resizing=bool(cfg.mean_resizing_embeddings)
        )
        log.info("resized token embeddings %d -> %d", current, model.get_input_embeddings().num_embeddings)


def freeze_for_unfrozen_parameters(model: Any, patterns: list[str]) -> int:
    """Train only parameters whose name matches one of the regexes; return how many tensors stay trainable."""
    try:
        compiled = [re.compile(p) for p in patterns]
    except re.error as exc:
        raise UserError(f"unfrozen_parameters: bad regex: {exc}") from None
    kept = 0
    for name, param in model.named_parameters():
        param.requires_grad = any(c.match(name) for c in compiled)
        kept += int(param.requires_grad)
    if not kept:
        raise UserError(f"unfrozen_parameters: no parameter name matches {patterns}",
                        hint="names look like model.layers.0.mlp.down_proj.weight")
    return kept


def _check_local(location: str, key: str) -> None:
    """A value that looks like a path must exist; anything else is taken as a hub id."""
    looks_local = location.startswith((".", "/", "~")) or Path(location).exists() or location.count("/") > 1
    if looks_local and not Path(location).expanduser().exists():
        raise UserError(f"{key}: {location!r} does not exist", hint="give a local model folder or a hub id")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
