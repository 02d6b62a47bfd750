"""Gated activation ``act(gate) * up`` (SiLU = SwiGLU, tanh-GELU = GeGLU) as elementwise Triton kernels.

The compute pair of ``TritonGLUFunction``, which ``glu.glu_function`` builds exactly as it builds the pure-torch
``GLUFunction`` (same contract: saves ``gate`` and ``up``, recomputes ``act(gate)`` in backward, where here both
gradients come out of one pass); ``LoRAMLPFunction`` runs the pair inside its backward too. Math in fp32, the
activation rounded to the input dtype before the product (as torch's eager ``act(gate) * up`` does).
Imported only when a kernel runs (see ``triton_support``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mudpuppy.kernels.function_class import Compute
from mudpuppy.kernels.glu import glu_function

_BLOCK = 1024


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _act_and_grad(g, ACT: tl.constexpr):
    """(act(g), d act / d g) in fp32."""
    if ACT == 0:
        s = tl.sigmoid(g)
        a = g * s
        da = s * (1.0 + g * (1.0 - s))
    else:
        k = 0.7978845608028654  # sqrt(2 / pi)
        inner = k * (g + 0.044715 * g * g * g)
        t = _tanh(inner)
        a = 0.5 * g * (1.0 + t)
        da = 0.5 * (1.0 + t) + 0.5 * g * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * g * g)
    return a, da


@triton.jit
def _glu_fwd(G, U, H, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(G + offs, mask=mask, other=0.0)
    u = tl.load(U + offs, mask=mask, other=0.0)
    a, _ = _act_and_grad(g.to(tl.float32), ACT)
    h = a.to(g.dtype).to(tl.float32) * u.to(tl.float32)
    tl.store(H + offs, h.to(H.dtype.element_ty), mask=mask)


@triton.jit
def _glu_bwd(DH, G, U, DG, DU, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(G + offs, mask=mask, other=0.0)
    u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
    dh = tl.load(DH + offs, mask=mask, other=0.0).to(tl.float32)
    a, da = _act_and_grad(g.to(tl.float32), ACT)
    tl.store(DU + offs, (dh * a.to(g.dtype).to(tl.float32)).to(DU.dtype.element_ty), mask=mask)
    tl.store(DG + offs, (dh * u * da).to(DG.dtype.element_ty), mask=mask)


def glu_forward(act_kind: int, g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``act(g) * u``."""
    g, u = g.contiguous(), u.contiguous()
    h = torch.empty(g.shape, dtype=torch.promote_types(g.dtype, u.dtype), device=g.device)
    n = g.numel()
    if n:
        _glu_fwd[(triton.cdiv(n, _BLOCK),)](g, u, h, n, ACT=act_kind, BLOCK=_BLOCK)
    return h


def glu_backward(act_kind: int, dh: torch.Tensor, g: torch.Tensor, u: torch.Tensor, need_g: bool = True,
                 need_u: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(d/d gate, d/d up) of ``act(g) * u`` given ``dh``, both in one pass (None where not needed)."""
    dh, g, u = dh.contiguous(), g.contiguous(), u.contiguous()
    dg, du = torch.empty_like(g), torch.empty_like(u)
    n = g.numel()
    if n:
        _glu_bwd[(triton.cdiv(n, _BLOCK),)](dh, g, u, dg, du, n, ACT=act_kind, BLOCK=_BLOCK)
    return (dg if need_g else None), (du if need_u else None)


TritonGLUFunction = glu_function("TritonGLUFunction", Compute(glu_forward, glu_backward))
