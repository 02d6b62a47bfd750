"""Gated activation ``act(gate) * up`` as one autograd Function that saves only ``gate`` and ``up``.

Plain autograd keeps ``gate`` (for act's backward), ``act(gate)`` and ``up`` (for the product's backward); this
recomputes ``act(gate)`` in backward instead. Any activation module works: its derivative is taken by autograd
on the recomputed value, so SiLU (SwiGLU) and tanh-GELU (GeGLU) share one path. Used for ``liger_glu_activation``
when the LoRA MLP kernel (which already contains this) is off. The reference is ``act(gate) * up``.
"""

from __future__ import annotations

from typing import Any

import torch


class GLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, act, gate, up):
        ctx.act = act
        ctx.save_for_backward(gate, up)
        return act(gate) * up

    @staticmethod
    def backward(ctx, dh):
        gate, up = ctx.saved_tensors
        with torch.enable_grad():
            g = gate.detach().requires_grad_(True)
            a = ctx.act(g)
        dup = dh * a.detach() if ctx.needs_input_grad[2] else None
        dgate = None
        if ctx.needs_input_grad[1]:
            (dgate,) = torch.autograd.grad(a, g, dh * up)
        return None, dgate, dup


def glu(act: Any, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The Triton kernel for SiLU/tanh-GELU on CUDA (``triton_support.use_triton``), the torch Function else."""
    from mudpuppy.kernels.triton_support import glu_act_kind, use_triton

    kind = glu_act_kind(act)
    if kind is not None and gate.dtype in (torch.float32, torch.float16, torch.bfloat16) and use_triton(gate):
        from mudpuppy.kernels.triton_glu import triton_glu

        return triton_glu(kind, gate, up)
    return GLUFunction.apply(act, gate, up)


def fused_glu_mlp_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Bound onto a gated MLP: ``down(glu(act, gate(x), up(x)))``, the projections still being the modules."""
    if args or kwargs:
        return self._mudpuppy_orig_forward(x, *args, **kwargs)
    return self.down_proj(glu(self.act_fn, self.gate_proj(x), self.up_proj(x)))
