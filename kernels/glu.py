"""Gated activation ``act(gate) * up`` as an autograd Function that saves only ``gate`` and ``up``.

Plain autograd keeps ``gate`` (for act's backward), ``act(gate)`` and ``up`` (for the product's backward); this
recomputes ``act(gate)`` in backward instead. Any activation module works: its derivative is taken by autograd
on the recomputed value, so SiLU (SwiGLU) and tanh-GELU (GeGLU) share one path. Used for ``liger_glu_activation``
when the LoRA MLP kernel (which already contains this) is off. The reference is ``act(gate) * up``.
"""

from __future__ import annotations

from typing import Any

import torch

from mudpuppy.kernels.function_class import Compute, function_class


def glu_function(name: str, compute: Compute) -> type[torch.autograd.Function]:
    """The Function of ``act(gate) * up``, saving ``gate`` and ``up`` only.

    ``compute`` is ``forward(act, gate, up) -> h`` and ``backward(act, dh, gate, up, need_gate, need_up) ->
    (dgate, dup)``, where ``act`` is what the pair understands: the activation module (the torch pair below) or
    the kernel's activation id (the Triton pair in ``triton_glu``). ``LoRAMLPFunction`` runs the same pairs inside.
    """

    def forward(ctx, act, gate, up):
        ctx.act = act
        ctx.save_for_backward(gate, up)
        return compute.forward(act, gate, up)

    def backward(ctx, dh):
        gate, up = ctx.saved_tensors
        return (None, *compute.backward(ctx.act, dh, gate, up, ctx.needs_input_grad[1], ctx.needs_input_grad[2]))

    return function_class(name, compute, glu_function.__doc__ or "", forward, backward)


def _forward(act: Any, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return act(gate) * up


def _backward(act: Any, dh: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, need_gate: bool,
              need_up: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Recomputes ``act(gate)`` and takes its derivative by autograd, so any activation works.

    ``dgate`` first: its ``dh * up`` temporary is gone before ``dup`` is allocated.
    """
    with torch.enable_grad():
        g = gate.detach().requires_grad_(True)
        a = act(g)
    dgate = None
    if need_gate:
        (dgate,) = torch.autograd.grad(a, g, dh * up)
    dup = dh * a.detach() if need_up else None
    return dgate, dup


GLUFunction = glu_function("GLUFunction", Compute(_forward, _backward))


def select_glu(act: Any, gate: torch.Tensor) -> tuple[type[torch.autograd.Function], Any]:
    """(Function, its ``act`` argument): the Triton kernel for SiLU/tanh-GELU on CUDA (``triton_support.use_triton``)
    with the activation's id, the torch Function with the module itself elsewhere."""
    from mudpuppy.kernels.triton_support import glu_act_kind, use_triton

    kind = glu_act_kind(act)
    if kind is not None and gate.dtype in (torch.float32, torch.float16, torch.bfloat16) and use_triton(gate):
        from mudpuppy.kernels.triton_glu import TritonGLUFunction

        return TritonGLUFunction, kind
    return GLUFunction, act


def glu(act: Any, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    fn, act_arg = select_glu(act, gate)
    return fn.apply(act_arg, gate, up)


def fused_glu_mlp_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Bound onto a gated MLP: ``down(glu(act, gate(x), up(x)))``, the projections still being the modules."""
    if args or kwargs:
        return self._mudpuppy_orig_forward(x, *args, **kwargs)
    return self.down_proj(glu(self.act_fn, self.gate_proj(x), self.up_proj(x)))
