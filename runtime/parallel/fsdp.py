"""FSDP2 from Axolotl-style ``fsdp`` / ``fsdp_config`` keys: Trainer settings, CPU enablement, direct sharding.

Axolotl users write ``fsdp_config`` keys with or without the ``fsdp_`` prefix and with FSDP1 names
(``offload_params``, ``sharding_strategy``); transformers reads a different spelling and builds accelerate's
FSDP plugin from it. ``fsdp_training_args`` is that translation, in one table, rejecting keys it does not know
(a silently ignored ``fsdp_config`` key is how a run OOMs on node 3 hours later). FSDP1 is deprecated upstream:
configs are run on FSDP2 (``fully_shard``) unless they say ``fsdp_version: 1`` explicitly.

On CPU, accelerate silently demotes FSDP to DDP (it only promotes GPU-like multi-process types);
``enable_fsdp_on_cpu`` puts the plugin back so the 2-process gloo tests exercise real sharding.
``shard_model`` is the direct ``fully_shard`` path (no Trainer), used with context parallelism and the bench.
"""

from __future__ import annotations

import difflib
import logging
from typing import Any

from mudpuppy.launcher.errors import UserError

log = logging.getLogger("mudpuppy.runtime.parallel")

STATE_DICT_TYPES = ("FULL_STATE_DICT", "SHARDED_STATE_DICT", "LOCAL_STATE_DICT")
WRAP_POLICIES = ("TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP")
# FSDP1 sharding strategies -> FSDP2 reshard_after_forward
SHARDING_STRATEGIES = {"FULL_SHARD": True, "SHARD_GRAD_OP": False}

# our key (after stripping "fsdp_") -> transformers' fsdp_config key (None: consumed here)
KEY_MAP: dict[str, str | None] = {
    "version": "version",
    "activation_checkpointing": "activation_checkpointing",
    "offload_params": "cpu_offload",
    "cpu_offload": "cpu_offload",
    "cpu_ram_efficient_loading": "cpu_ram_efficient_loading",
    "state_dict_type": "state_dict_type",
    "auto_wrap_policy": "auto_wrap_policy",
    "transformer_layer_cls_to_wrap": "transformer_layer_cls_to_wrap",
    "min_num_params": "min_num_params",
    "reshard_after_forward": "reshard_after_forward",
    "sharding_strategy": None,
    "final_state_dict_type": None,
    "mixed_precision_policy": None,
    "cpu_offload_pin_memory": None,
    # FSDP1-only switches: meaningful with version 1, harmless (and dropped) with FSDP2
    "sync_module_states": "sync_module_states",
    "use_orig_params": "use_orig_params",
    "limit_all_gathers": "limit_all_gathers",
    "forward_prefetch": "forward_prefetch",
    "backward_prefetch": "backward_prefetch",
}
FSDP1_ONLY = ("sync_module_states", "use_orig_params", "limit_all_gathers", "forward_prefetch", "backward_prefetch")


def fsdp_enabled(cfg: Any) -> bool:
    return bool(cfg.fsdp or cfg.fsdp_config is not None or cfg.fsdp_version)


MP_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
             "fp32": "float32", "float32": "float32"}
MP_KEYS = ("param_dtype", "reduce_dtype", "output_dtype")


def mixed_precision_policy(cfg: Any) -> Any:
    """``fsdp_config.mixed_precision_policy`` as FSDP2's ``MixedPrecisionPolicy`` (None when not set).

    Axolotl's spelling is one dtype (``bf16``: compute, reduce and outputs in bf16); a mapping with
    ``param_dtype`` / ``reduce_dtype`` / ``output_dtype`` (and ``cast_forward_inputs``) sets them one by one.
    transformers does not pass this key on to accelerate, so ``prepare_trainer`` puts it on the plugin itself.
    """
    normalized = normalized_fsdp_config(cfg)
    value = normalized.get("mixed_precision_policy")
    if value is None:
        return None
    if fsdp_version(cfg, normalized) != 2:
        raise UserError("fsdp_config.mixed_precision_policy is applied with FSDP2 only",
                        hint="remove it or use fsdp_version: 2")
    if isinstance(value, str):
        spec: dict[str, Any] = dict.fromkeys(MP_KEYS, value)
    elif isinstance(value, dict):
        unknown = sorted(set(value) - {*MP_KEYS, "cast_forward_inputs"})
        if unknown:
            raise UserError(f"fsdp_config.mixed_precision_policy.{unknown[0]}: unknown key",
                            hint="use param_dtype, reduce_dtype, output_dtype, cast_forward_inputs")
        spec = dict(value)
    else:
        raise UserError("fsdp_config.mixed_precision_policy must be a dtype (bf16, fp16, fp32) or a mapping")
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy

    kwargs: dict[str, Any] = {}
    for key in MP_KEYS:
        if spec.get(key) is None:
            continue
        name = MP_DTYPES.get(str(spec[key]).lower().removeprefix("torch."))
        if name is None:
            raise UserError(f"fsdp_config.mixed_precision_policy: {key} {spec[key]!r} is not a dtype",
                            hint="use bf16, fp16 or fp32")
        kwargs[key] = getattr(torch, name)
    if "cast_forward_inputs" in spec:
        kwargs["cast_forward_inputs"] = bool(spec["cast_forward_inputs"])
    return MixedPrecisionPolicy(**kwargs)


def cpu_ram_efficient_loading(cfg: Any) -> bool:
    if not fsdp_enabled(cfg):
        return False
    value = normalized_fsdp_config(cfg).get("cpu_ram_efficient_loading")
    return str(value).lower() == "true"


def normalized_fsdp_config(cfg: Any) -> dict[str, Any]:
    """``fsdp_config`` with the ``fsdp_`` prefixes stripped and unknown keys rejected (one UserError)."""
    raw = dict(cfg.fsdp_config or {})
    out: dict[str, Any] = {}
    for key, value in raw.items():
        bare = key[5:] if key.startswith("fsdp_") else key
        if bare not in KEY_MAP:
            close = difflib.get_close_matches(bare, KEY_MAP, n=1)
            raise UserError(f"fsdp_config.{key}: unknown FSDP setting",
                            hint=f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(sorted(KEY_MAP)))
        out[bare] = value
    return out


def fsdp_version(cfg: Any, normalized: dict[str, Any]) -> int:
    version = cfg.fsdp_version or normalized.get("version") or 2
    if int(version) not in (1, 2):
        raise UserError(f"fsdp_version: {version!r} is not 1 or 2")
    return int(version)


def final_state_dict_type(cfg: Any) -> str:
    normalized = normalized_fsdp_config(cfg)
    return str(cfg.fsdp_final_state_dict_type or normalized.get("final_state_dict_type") or "FULL_STATE_DICT")


def fsdp_training_args(cfg: Any, *, gradient_checkpointing: bool = False) -> dict[str, Any]:
    """``fsdp`` / ``fsdp_config`` for TrainingArguments (empty when FSDP is off)."""
    if not fsdp_enabled(cfg):
        return {}
    normalized = normalized_fsdp_config(cfg)
    version = fsdp_version(cfg, normalized)
    out: dict[str, Any] = {"version": version}
    for key, value in normalized.items():
        target = KEY_MAP[key]
        if target is None or target == "version":
            continue
        if version == 2 and key in FSDP1_ONLY:
            continue
        out[target] = value

    policy = str(out.get("auto_wrap_policy", "TRANSFORMER_BASED_WRAP")).upper()
    if policy not in WRAP_POLICIES:
        raise UserError(f"fsdp_config.auto_wrap_policy: {policy!r} is not one of {', '.join(WRAP_POLICIES)}")
    out["auto_wrap_policy"] = policy
    if policy == "SIZE_BASED_WRAP" and not out.get("min_num_params"):
        raise UserError("fsdp_config.min_num_params is required with auto_wrap_policy: SIZE_BASED_WRAP",
                        hint="e.g. min_num_params: 100000000")
    layers = out.get("transformer_layer_cls_to_wrap")
    if isinstance(layers, str):
        out["transformer_layer_cls_to_wrap"] = [c.strip() for c in layers.split(",") if c.strip()]

    for key in ("state_dict_type",):
        if key in out:
            value = str(out[key]).upper()
            if value not in STATE_DICT_TYPES or value == "LOCAL_STATE_DICT":
                raise UserError(f"fsdp_config.{key}: {out[key]!r} is not supported",
                                hint="use FULL_STATE_DICT or SHARDED_STATE_DICT")
            out[key] = value
    mixed_precision_policy(cfg)  # rejected here, before tokenization, when it cannot be applied
    final = final_state_dict_type(cfg)
    if final not in ("FULL_STATE_DICT", "SHARDED_STATE_DICT"):
        raise UserError(f"fsdp_final_state_dict_type: {final!r} is not supported",
                        hint="use FULL_STATE_DICT (a normal HF model folder) or SHARDED_STATE_DICT")

    strategy = normalized.get("sharding_strategy")
    if strategy is not None:
        name = str(strategy).upper()
        if version == 2:
            if name not in SHARDING_STRATEGIES:
                raise UserError(f"fsdp_config.sharding_strategy: {strategy!r} has no FSDP2 equivalent",
                                hint="use FULL_SHARD or SHARD_GRAD_OP (or reshard_after_forward: true/false)")
            out.setdefault("reshard_after_forward", SHARDING_STRATEGIES[name])
        else:
            out.setdefault("reshard_after_forward", name.lower())
    for key in ("activation_checkpointing", "cpu_offload", "reshard_after_forward", "cpu_ram_efficient_loading"):
        if key in out and isinstance(out[key], str) and out[key].lower() in ("true", "false"):
            out[key] = out[key].lower() == "true"
    if out.get("activation_checkpointing") and gradient_checkpointing:
        raise UserError("gradient_checkpointing and fsdp_config.activation_checkpointing are both on",
                        hint="with FSDP keep only fsdp_config.activation_checkpointing: true")

    legacy = [s for s in (cfg.fsdp or []) if s not in ("full_shard", "shard_grad_op", "auto_wrap", "offload")]
    if legacy:
        raise UserError(f"fsdp: {legacy[0]!r} is not supported",
                        hint="use fsdp: [full_shard, auto_wrap] (add offload for CPU offload) or fsdp_config")
    if "offload" in (cfg.fsdp or []):
        out.setdefault("cpu_offload", True)
    if "shard_grad_op" in (cfg.fsdp or []) and version == 2:
        out.setdefault("reshard_after_forward", False)
    return {"fsdp": "full_shard auto_wrap" if version == 1 else True, "fsdp_config": out}


# ---------------------------------------------------------------- Trainer on CPU
def enable_fsdp_on_cpu(trainer: Any) -> bool:
    """Give a CPU Trainer the FSDP plugin accelerate dropped; returns whether anything changed.

    Both ``AcceleratorState`` and ``PartialState`` carry ``distributed_type``; setting only one is undone and
    ``save_model`` then trips on sharded tensors, so both are set.
    """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    args = trainer.args
    if getattr(args, "fsdp_plugin_args", None) is None:
        return False
    state = trainer.accelerator.state
    if getattr(state, "fsdp_plugin", None) is not None and state.distributed_type == DistributedType.FSDP:
        return False
    plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    AcceleratorState().fsdp_plugin = plugin
    AcceleratorState().distributed_type = DistributedType.FSDP
    PartialState().distributed_type = DistributedType.FSDP
    trainer.is_fsdp_enabled = True
    return True


def use_final_state_dict_type(trainer: Any, state_dict_type: str) -> None:
    """Switch the plugin's state dict type before the final save (SHARDED checkpoints, FULL final model)."""
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if plugin is not None and str(plugin.state_dict_type).rsplit(".", 1)[-1] != state_dict_type:
        plugin.set_state_dict_type(state_dict_type)


# ---------------------------------------------------------------- direct fully_shard
def decoder_layer_classes(model: Any, names: list[str] | None = None) -> tuple[type, ...]:
    """The module classes to shard one by one: named ones, else the model's ``_no_split_modules``."""
    wanted = set(names or getattr(model, "_no_split_modules", None) or [])
    if not wanted:
        inner = getattr(model, "model", None)
        wanted = set(getattr(inner, "_no_split_modules", None) or [])
    found = {type(m) for m in model.modules() if type(m).__name__ in wanted}
    missing = wanted - {c.__name__ for c in found}
    if names and missing:
        raise UserError(f"fsdp_config.transformer_layer_cls_to_wrap: no module of class {sorted(missing)[0]} in "
                        f"{type(model).__name__}", hint="name the decoder layer class, e.g. LlamaDecoderLayer")
    return tuple(found)


def shard_model(model: Any, mesh: Any = None, *, reshard_after_forward: bool = True, mp_policy: Any = None,
                layer_classes: tuple[type, ...] | None = None, offload: bool = False) -> Any:
    """``fully_shard`` every decoder layer, then the root; parameters become DTensor shards on ``mesh``."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    kwargs: dict[str, Any] = {"reshard_after_forward": reshard_after_forward,
                              "mp_policy": mp_policy or MixedPrecisionPolicy()}
    if mesh is not None:
        kwargs["mesh"] = mesh
    if offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    classes = layer_classes if layer_classes is not None else decoder_layer_classes(model)
    layers: list[Any] = [m for m in model.modules() if classes and isinstance(m, classes)]
    for module in layers:
        fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    return model


def is_sharded(model: Any) -> bool:
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    return bool(params) and all(isinstance(p, DTensor) for p in params)
