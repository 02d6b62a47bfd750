"""LoRA MLP / QKV / O as hand-written autograd Functions that save the block input and recompute the rest.

peft's default path runs each LoRA projection as ``base(x) + B(A(dropout(x))) * s`` through autograd, which keeps
every intermediate alive until backward: for a gated MLP that is ``gate``, ``up``, ``act(gate)``, ``act*up`` and
three ``x @ A.T`` products per layer. ``LoRAMLPFunction`` saves only ``x``, ``gate`` and ``up`` and recomputes
``act(gate)`` and ``act(gate) * up`` in backward (two of the four [tokens x intermediate] tensors per layer);
``LoRALinearFunction`` saves only ``x`` for a single projection (Q, K, V and O each use it).

Base weights are frozen (they get no gradient); QLoRA base weights (bitsandbytes ``Params4bit``) are dequantised
on the fly in forward and again in backward rather than kept. Dropout must be 0 (the rows dropped in forward would
have to be saved, which is the memory the kernel exists to avoid). Bias on the base layer and on ``lora_B``
(peft's ``lora_bias``) is supported. The references are peft's own modules, run with the kernels off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mudpuppy.kernels.function_class import Compute, function_class
from mudpuppy.kernels.glu import select_glu


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run these matmuls in, else the input's own dtype.

    Under QLoRA, peft's k-bit preparation upcasts norms and embeddings to fp32, so fp32 hidden states meet bf16
    (dequantised) weights. Autocast does not reach inside a Function's hand-written in-place ops (``addmm_``),
    so everything is cast to this dtype explicitly and the Function then runs with autocast off.
    """
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


@dataclass
class Proj:
    """One projection: frozen base (weight via ``module``), optional LoRA pair. Not a tensor, so kept on ctx."""

    module: Any  # the base linear (nn.Linear or a bitsandbytes 4-bit linear)
    scaling: float = 0.0
    has_lora: bool = False
    has_lora_bias: bool = False

    def weight(self, dtype: torch.dtype) -> torch.Tensor:
        w = self.module.weight
        if type(w).__name__ == "Int8Params":  # int8 codes need their SCB scales; lora_parts never gets here
            raise TypeError("the LoRA kernels cannot run on bitsandbytes 8-bit weights")
        quant_state = getattr(w, "quant_state", None)
        if quant_state is not None:  # QLoRA: dequantise now, drop after use
            import bitsandbytes.functional as bnbf

            w = bnbf.dequantize_4bit(w.data, quant_state)
        return w.to(dtype)

    def bias(self, dtype: torch.dtype) -> torch.Tensor | None:
        b = getattr(self.module, "bias", None)
        return None if b is None else b.to(dtype)


def _forward(x: torch.Tensor, p: Proj, a: torch.Tensor | None, b: torch.Tensor | None,
             bb: torch.Tensor | None) -> torch.Tensor:
    y = x @ p.weight(x.dtype).t()
    bias = p.bias(x.dtype)
    if bias is not None:
        y += bias
    if a is not None and b is not None:
        y.addmm_(x @ a.t().to(x.dtype), b.t().to(x.dtype), alpha=p.scaling)
        if bb is not None:
            y.add_(bb.to(x.dtype), alpha=p.scaling)
    return y


def _backward(x: torch.Tensor, dy: torch.Tensor, p: Proj, a: torch.Tensor | None, b: torch.Tensor | None,
              bb: torch.Tensor | None, need_x: bool) -> tuple[torch.Tensor | None, ...]:
    """(dx, dA, dB, dbias_B) of one projection; dx is None when not needed."""
    dx = dy @ p.weight(dy.dtype) if need_x else None
    da = db = dbb = None
    if a is not None and b is not None:
        a_, b_ = a.to(dy.dtype), b.to(dy.dtype)
        dy_b = (dy @ b_).mul_(p.scaling)  # [n, r]
        da = (dy_b.t() @ x).to(a.dtype)
        db = ((dy.t() @ (x @ a_.t())).mul_(p.scaling)).to(b.dtype)
        if bb is not None:
            dbb = (dy.sum(0) * p.scaling).to(bb.dtype)
        if dx is not None:
            dx.addmm_(dy_b, a_)
    return dx, da, db, dbb


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1])


def lora_linear_function(name: str, compute: Compute) -> type[torch.autograd.Function]:
    """The Function of one LoRA projection, y = x W^T + bias + s * (x A^T B^T + bias_B), saving only x.

    ``compute`` is the 2-d math: ``forward(x, proj, a, b, bb) -> y`` and
    ``backward(x, dy, proj, a, b, bb, need_x) -> (dx, dA, dB, dbias_B)``; the pure-torch pair is below, the Triton
    pair in ``triton_lora``. Around it: autocast resolved to one compute dtype, leading dims flattened, dx cast
    back to the input's dtype.
    """

    def forward(ctx, x, proj, a, b, bb):
        ctx.proj, ctx.x_dtype, ctx.dtype = proj, x.dtype, _compute_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(ctx.dtype)
            ctx.save_for_backward(x, a, b, bb)
            y = compute.forward(_flat(x), proj, a, b, bb)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    def backward(ctx, dy):
        x, a, b, bb = ctx.saved_tensors
        with torch.autocast(x.device.type, enabled=False):
            dx, da, db, dbb = compute.backward(_flat(x), _flat(dy.to(ctx.dtype)), ctx.proj, a, b, bb,
                                               ctx.needs_input_grad[0])
        if dx is not None:
            dx = dx.reshape(x.shape).to(ctx.x_dtype)
        return dx, None, da, db, dbb

    return function_class(name, compute, lora_linear_function.__doc__ or "", forward, backward)


LoRALinearFunction = lora_linear_function("LoRALinearFunction", Compute(_forward, _backward))


def lora_linear(x: torch.Tensor, proj: Proj, a: torch.Tensor, b: torch.Tensor,
                bb: torch.Tensor | None) -> torch.Tensor:
    """The Triton Function on CUDA (or the interpreter) for fp32/fp16/bf16 compute, the torch Function else."""
    if _use_triton_linear(x):  # the base matmul with the LoRA term in its epilogue
        from mudpuppy.kernels.triton_lora import TritonLoRALinearFunction

        return TritonLoRALinearFunction.apply(x, proj, a, b, bb)
    return LoRALinearFunction.apply(x, proj, a, b, bb)


def _use_triton_linear(x: torch.Tensor) -> bool:
    from mudpuppy.kernels.triton_support import use_triton

    return _compute_dtype(x) in (torch.float32, torch.float16, torch.bfloat16) and use_triton(x)


class LoRAMLPFunction(torch.autograd.Function):
    """down(act(gate(x)) * up(x)) with LoRA on any of the three, saving x, gate(x) and up(x) only.

    ``act(g) * u`` and its two gradients run through the GLU kernel's compute pair that ``glu.select_glu`` picks
    (Triton for SiLU/tanh-GELU on CUDA, the torch pair otherwise), in forward and again in backward.
    """

    @staticmethod
    def forward(ctx, x, act, projs, *lora):
        ctx.projs, ctx.x_dtype, ctx.dtype = projs, x.dtype, _compute_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(ctx.dtype)
            x2 = _flat(x)
            g = _forward(x2, projs[0], *lora[0:3])
            u = _forward(x2, projs[1], *lora[3:6])
            glu_fn, ctx.glu_act = select_glu(act, g)
            ctx.glu = glu_fn.compute
            out = _forward(ctx.glu.forward(ctx.glu_act, g, u), projs[2], *lora[6:9])
        ctx.save_for_backward(x, g, u, *lora)
        return out.reshape(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, dout):
        x = ctx.saved_tensors[0]
        with torch.autocast(x.device.type, enabled=False):
            return LoRAMLPFunction._backward(ctx, dout.to(ctx.dtype))

    @staticmethod
    def _backward(ctx, dout):
        x, g, u, *lora = ctx.saved_tensors
        pg, pu, pd = ctx.projs
        x2, dout = _flat(x), _flat(dout)
        h = ctx.glu.forward(ctx.glu_act, g, u)  # recomputed, not saved
        dh, *d_down = _backward(h, dout, pd, lora[6], lora[7], lora[8], True)
        del h
        dg, du = ctx.glu.backward(ctx.glu_act, dh, g, u, True, True)
        del dh
        need_x = ctx.needs_input_grad[0]
        dx_g, *d_gate = _backward(x2, dg, pg, lora[0], lora[1], lora[2], need_x)
        dx_u, *d_up = _backward(x2, du, pu, lora[3], lora[4], lora[5], need_x)
        dx = None
        if need_x:
            assert dx_g is not None and dx_u is not None
            dx = dx_g.add_(dx_u).reshape(x.shape).to(ctx.x_dtype)
        return (dx, None, None, *d_gate, *d_up, *d_down)


# ---- peft glue ------------------------------------------------------------------------------------------------


def lora_parts(layer: Any) -> tuple[Proj, list[torch.Tensor | None]] | None:
    """(Proj, [A, B, bias_B]) for a peft LoRA linear or plain nn.Linear the kernels can run, else None.

    None means "use the module's own forward": adapters disabled or merged, several active adapters, a LoRA
    variant (DoRA), dropout, or a trainable base weight.
    """
    if isinstance(layer, nn.Linear) and not hasattr(layer, "lora_A"):
        if layer.weight.requires_grad or type(layer.weight).__name__ == "Int8Params":
            return None
        return Proj(layer), [None, None, None]
    if not hasattr(layer, "lora_A") or not hasattr(layer, "base_layer"):
        return None
    if layer.disable_adapters or layer.merged or getattr(layer, "fan_in_fan_out", False):
        return None
    active = [n for n in layer.active_adapters if n in layer.lora_A]
    base = layer.base_layer
    if type(getattr(base, "weight", None)).__name__ == "Int8Params":
        return None  # 8-bit codes without their scales would be garbage; apply_kernels refuses load_in_8bit
    if len(active) != 1 or getattr(base.weight, "requires_grad", False):
        return None
    name = active[0]
    if name in getattr(layer, "lora_variant", {}) or getattr(layer, "use_dora", {}).get(name, False):
        return None
    dropout = layer.lora_dropout[name]
    if not isinstance(dropout, nn.Identity) and not (isinstance(dropout, nn.Dropout) and dropout.p == 0):
        return None
    a_mod, b_mod = layer.lora_A[name], layer.lora_B[name]
    if not isinstance(a_mod, nn.Linear) or not isinstance(b_mod, nn.Linear):
        return None
    proj = Proj(base, scaling=float(layer.scaling[name]), has_lora=True, has_lora_bias=b_mod.bias is not None)
    return proj, [a_mod.weight, b_mod.weight, b_mod.bias]


def fused_linear_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Bound onto a peft LoRA linear (Q, K, V or O); falls back to peft's forward when the kernel can't run."""
    parts = lora_parts(self)
    if parts is None or args or kwargs or not parts[0].has_lora:
        return self._mudpuppy_orig_forward(x, *args, **kwargs)
    proj, (a, b, bb) = parts
    return lora_linear(x, proj, a, b, bb)


def fused_mlp_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Bound onto a gated MLP module (gate_proj / up_proj / down_proj / act_fn)."""
    parts = [lora_parts(getattr(self, n)) for n in ("gate_proj", "up_proj", "down_proj")]
    ready = [p for p in parts if p is not None]
    if args or kwargs or len(ready) != len(parts):
        return self._mudpuppy_orig_forward(x, *args, **kwargs)
    projs = tuple(p[0] for p in ready)
    lora = [t for p in ready for t in p[1]]
    return LoRAMLPFunction.apply(x, self.act_fn, projs, *lora)


def is_gated_mlp(module: nn.Module) -> bool:
    return (type(module).__name__.endswith("MLP")
            and all(hasattr(module, n) for n in ("gate_proj", "up_proj", "down_proj", "act_fn")))
