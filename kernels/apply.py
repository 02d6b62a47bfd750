"""``apply_kernels(model, cfg)``: switch on the kernels a config asks for, on an already built model (+ adapter).

Every swap goes through the module instance: a module's ``forward`` is rebound (the original kept as
``_mudpuppy_orig_forward`` and used whenever the kernel can't run, e.g. adapters disabled or merged), and the
causal LM's forward is wrapped so the loss comes from hidden states. No library source or class is changed, so
two models in one process don't affect each other. Parameter names are untouched: adapters save and load as usual.
One log line per kernel applied; combinations that cannot work raise ``UserError`` before anything is changed.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

from mudpuppy.kernels.switches import KernelSwitches, _get, resolve_switches
from mudpuppy.launcher.errors import UserError

_ORIG = "_mudpuppy_orig_forward"


def apply_kernels(model: nn.Module, cfg: Any) -> list[str]:
    switches = resolve_switches(cfg)
    if not switches.any():
        return []
    _validate(switches, cfg)
    causal = _unwrap(model)
    lines: list[str] = []
    if switches.rms_norm:
        lines.append(_apply_rms_norm(causal))
    if switches.glu_activation:
        lines.append("kernel liger_glu_activation: part of lora_mlp (its Function recomputes act(gate))"
                     if switches.lora_mlp else _apply_glu(causal))
    if switches.lora_mlp:
        lines.append(_apply_lora_mlp(causal))
    if switches.lora_qkv:
        lines.append(_apply_lora_linear(causal, ("q_proj", "k_proj", "v_proj"), "lora_qkv_kernel"))
    if switches.lora_o:
        lines.append(_apply_lora_linear(causal, ("o_proj",), "lora_o_kernel"))
    if switches.tiled_mlp:
        lines.append(_apply_tiled_mlp(causal, switches.tiled_mlp_num_shards))
    if switches.fused_linear_ce:
        from mudpuppy.kernels.causal_lm import install_fused_loss

        lines.append(install_fused_loss(causal, num_chunks=switches.ce_num_chunks))
    return lines


def _validate(sw: KernelSwitches, cfg: Any) -> None:
    lora_keys = [k for k, on in (("lora_mlp_kernel", sw.lora_mlp), ("lora_qkv_kernel", sw.lora_qkv),
                                 ("lora_o_kernel", sw.lora_o)) if on]
    if not lora_keys:
        return
    keys = ", ".join(lora_keys)
    off = "set " + ", ".join(f"{k}: false" for k in lora_keys)
    if _get(cfg, "adapter") not in ("lora", "qlora"):
        raise UserError(f"{keys} fuse LoRA projections and need adapter: lora or qlora", hint=off)
    dropout = _get(cfg, "lora_dropout", 0.0) or 0.0
    if dropout > 0:
        raise UserError(f"{keys} need lora_dropout: 0 (got {dropout}); the fused LoRA path has no dropout",
                        hint=f"set lora_dropout: 0 or {off}")
    if _get(cfg, "peft_use_dora"):
        raise UserError(f"{keys} do not support DoRA (peft_use_dora: true)", hint=off)
    if _get(cfg, "lora_fan_in_fan_out"):
        raise UserError(f"{keys} do not support lora_fan_in_fan_out: true", hint=off)


def _unwrap(model: nn.Module) -> nn.Module:
    """The ``*ForCausalLM`` under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _bind(module: nn.Module, fn: Callable[..., Any]) -> None:
    if not hasattr(module, _ORIG):
        setattr(module, _ORIG, module.forward)
    module.forward = types.MethodType(fn, module)


def _named(model: nn.Module, pred: Callable[[nn.Module], bool]) -> Iterator[tuple[str, nn.Module]]:
    return ((n, m) for n, m in model.named_modules() if pred(m))


def _model_name(model: nn.Module) -> str:
    return type(model).__name__


def _apply_rms_norm(model: nn.Module) -> str:
    from mudpuppy.kernels.rms_norm import fused_rms_norm_forward, is_llama_rms_norm

    found = [m for _, m in _named(model, is_llama_rms_norm)]
    for m in found:
        _bind(m, fused_rms_norm_forward)
    if not found:
        return f"kernel liger_rms_norm: not applied; {_model_name(model)} has no Llama-style RMSNorm"
    return f"kernel liger_rms_norm: {len(found)} RMSNorm modules save input + 1/rms only"


def _apply_glu(model: nn.Module) -> str:
    from mudpuppy.kernels.glu import fused_glu_mlp_forward
    from mudpuppy.kernels.lora import is_gated_mlp

    found = [m for _, m in _named(model, is_gated_mlp)]
    for m in found:
        _bind(m, fused_glu_mlp_forward)
    if not found:
        return f"kernel liger_glu_activation: not applied; {_model_name(model)} has no gate/up/down MLP"
    return f"kernel liger_glu_activation: {len(found)} gated MLPs recompute act(gate) in backward"


def _apply_lora_mlp(model: nn.Module) -> str:
    from mudpuppy.kernels.lora import fused_mlp_forward, is_gated_mlp, lora_parts

    found = [m for _, m in _named(model, is_gated_mlp)]
    if not found:
        raise UserError(f"lora_mlp_kernel: {_model_name(model)} has no gated MLP (gate_proj/up_proj/down_proj)",
                        hint="set lora_mlp_kernel: false")
    with_lora = 0
    for m in found:
        parts = [lora_parts(getattr(m, n)) for n in ("gate_proj", "up_proj", "down_proj")]
        with_lora += any(p is not None and p[0].has_lora for p in parts)
        _bind(m, fused_mlp_forward)
    return (f"kernel lora_mlp: {len(found)} gated MLPs ({with_lora} with LoRA) run as one autograd Function "
            "saving x, gate, up")


def _apply_lora_linear(model: nn.Module, names: tuple[str, ...], key: str) -> str:
    from mudpuppy.kernels.lora import fused_linear_forward, lora_parts

    found = []
    for _, m in model.named_modules():
        for n in names:
            child = getattr(m, n, None)
            if isinstance(child, nn.Module) and hasattr(child, "lora_A"):
                parts = lora_parts(child)
                if parts is not None and parts[0].has_lora:
                    found.append(child)
    if not found:
        raise UserError(f"{key}: no LoRA adapter on {'/'.join(names)} in {_model_name(model)}",
                        hint=f"add them to lora_target_modules (or lora_target_linear: true) or set {key}: false")
    for child in found:
        _bind(child, fused_linear_forward)
    return f"kernel {key.removesuffix('_kernel')}: {len(found)} LoRA projections ({'/'.join(names)}) save x only"


def _is_mlp(module: nn.Module) -> bool:
    return type(module).__name__.endswith("MLP")


def _apply_tiled_mlp(model: nn.Module, num_shards: int | None) -> str:
    from mudpuppy.kernels.tiled_mlp import tiled_forward

    found: list[tuple[str, nn.Module]] = []
    for name, m in _named(model, _is_mlp):
        if not any(name.startswith(outer + ".") for outer, _ in found):  # outermost MLPs only
            found.append((name, m))
    if not found:
        raise UserError(f"tiled_mlp: {_model_name(model)} has no *MLP modules to tile", hint="set tiled_mlp: false")
    for _, m in found:
        if not hasattr(m, "_mudpuppy_tiled_inner"):
            m._mudpuppy_tiled_inner = m.forward  # type: ignore[assignment]
            _bind(m, tiled_forward)
        m._mudpuppy_tiled_shards = num_shards  # type: ignore[assignment]
    shards = num_shards or "ceil(seq_len / hidden_size)"
    return f"kernel tiled_mlp: {len(found)} MLPs run over {shards} sequence tiles, recomputed in backward"
