"""RMSNorm as an autograd Function that saves the input and one fp32 scalar per token.

HF's Llama-style RMSNorm keeps the fp32 upcast, its square and the normalised tensor for backward (three
full-size fp32 tensors per norm, two norms per layer); this saves ``x`` and ``1/rms`` and recomputes the
normalised tensor in backward. The reference is HF's own module (same formula: fp32 normalise, cast back to the
input dtype, then scale by the weight).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mudpuppy.kernels.function_class import Compute, function_class


def _up(t: torch.Tensor) -> torch.Tensor:
    """At least fp32 (as HF upcasts), a copy only when the dtype changes."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def rms_norm_function(name: str, compute: Compute) -> type[torch.autograd.Function]:
    """The Function of ``weight * normalise(x)``, saving ``x``, ``weight`` and ``1/rms``.

    ``compute`` is ``forward(x, weight, eps) -> (y, rstd)`` and ``backward(dy, x, weight, rstd, need_x, need_w) ->
    (dx, dw)``; the pure-torch pair is below, the Triton pair in ``triton_rms_norm``.
    """

    def forward(ctx, x, weight, eps):
        y, rstd = compute.forward(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        return (*compute.backward(dy, x, weight, rstd, ctx.needs_input_grad[0], ctx.needs_input_grad[1]), None)

    return function_class(name, compute, rms_norm_function.__doc__ or "", forward, backward)


def _forward(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    xf = _up(x)
    rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True).add_(eps))
    return weight * (xf * rstd).to(x.dtype), rstd


def _backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor, need_x: bool,
              need_w: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    xhat = _up(x) * rstd
    dw = None
    if need_w:
        dw = (dy * xhat.to(x.dtype)).reshape(-1, x.shape[-1]).sum(0).to(weight.dtype)
    dx = None
    if need_x:
        dxhat = _up(dy * weight)
        dot = (dxhat * xhat).mean(-1, keepdim=True)
        dx = dxhat.sub_(xhat.mul_(dot)).mul_(rstd).to(x.dtype)
    return dx, dw


RMSNormFunction = rms_norm_function("RMSNormFunction", Compute(_forward, _backward))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The Triton Function on CUDA (``triton_support.use_triton``), the torch Function elsewhere."""
    from mudpuppy.kernels.triton_support import use_triton

    if x.dtype in (torch.float32, torch.float16, torch.bfloat16) and use_triton(x):
        from mudpuppy.kernels.triton_rms_norm import TritonRMSNormFunction

        return TritonRMSNormFunction.apply(x, weight, eps)
    return RMSNormFunction.apply(x, weight, eps)


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = _up(x)
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def is_llama_rms_norm(module: nn.Module) -> bool:
    """Llama/Mistral/Qwen-style norms (``weight * normalised``); Gemma's ``(1 + weight)`` variant is left alone."""
    name = type(module).__name__
    return ("RMSNorm" in name and "Gemma" not in name and hasattr(module, "variance_epsilon")
            and isinstance(getattr(module, "weight", None), torch.Tensor))


def fused_rms_norm_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    if args or kwargs:
        return self._mudpuppy_orig_forward(x, *args, **kwargs)
    return rms_norm(x, self.weight, float(self.variance_epsilon))
