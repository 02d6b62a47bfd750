"""RMSNorm forward and backward as Triton kernels (one program per row; ``dw`` reduced per program).

The compute pair of ``TritonRMSNormFunction``, which ``rms_norm.rms_norm_function`` builds exactly as it builds the
pure-torch ``RMSNormFunction`` (same contract): saves ``x`` and fp32 ``1/rms`` per row, normalises in fp32, casts
the normalised row back to the input dtype, then scales by the weight. Imported only when a kernel runs (see
``triton_support``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mudpuppy.kernels.function_class import Compute
from mudpuppy.kernels.rms_norm import rms_norm_function
from mudpuppy.kernels.triton_support import num_programs


@triton.jit
def _rms_fwd(X, W, Y, RSTD, stride_x, stride_y, n_cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0)
    xf = x.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(xf * xf, axis=0) / n_cols + eps)
    tl.store(RSTD + row, rstd)
    w = tl.load(W + cols, mask=mask, other=0.0)
    y = w * (xf * rstd).to(x.dtype)
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _rms_bwd(DY, X, W, RSTD, DX, DW, stride_dy, stride_x, stride_dx, n_rows, n_cols, rows_per_program,
             BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    start = pid * rows_per_program
    end = tl.minimum(start + rows_per_program, n_rows)
    for row in range(start, end):
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0)
        dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row)
        xhat = x.to(tl.float32) * rstd
        dw += dy * xhat.to(x.dtype).to(tl.float32)
        dxhat = dy * w
        dot = tl.sum(dxhat * xhat, axis=0) / n_cols
        dx = (dxhat - xhat * dot) * rstd
        tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
    tl.store(DW + pid * BLOCK + cols, dw, mask=mask)


def _forward(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, fp32 1/rms per row)."""
    shape, d = x.shape, x.shape[-1]
    x2 = x.reshape(-1, d).contiguous()
    n = x2.shape[0]
    y = torch.empty(x2.shape, dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
    rstd = torch.empty(n, dtype=torch.float32, device=x.device)
    if n:
        _rms_fwd[(n,)](x2, weight, y, rstd, x2.stride(0), y.stride(0), d, float(eps), BLOCK=triton.next_power_of_2(d))
    return y.reshape(shape), rstd


def _backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor, need_x: bool,
              need_w: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(dx, dw), both from one pass (None where not needed)."""
    d = x.shape[-1]
    x2 = x.reshape(-1, d).contiguous()
    n = x2.shape[0]
    dy2 = dy.reshape(-1, d).contiguous()
    block = triton.next_power_of_2(d)
    programs = num_programs(x2, max(1, n))
    rows_per_program = triton.cdiv(max(1, n), programs)
    dx = torch.empty_like(x2)
    dw_part = torch.zeros(programs, block, dtype=torch.float32, device=x2.device)
    if n:
        _rms_bwd[(programs,)](dy2, x2, weight, rstd, dx, dw_part, dy2.stride(0), x2.stride(0), dx.stride(0),
                              n, d, rows_per_program, BLOCK=block)
    dw = dw_part[:, :d].sum(0).to(weight.dtype) if need_w else None
    return (dx.reshape(x.shape) if need_x else None), dw


TritonRMSNormFunction = rms_norm_function("TritonRMSNormFunction", Compute(_forward, _backward))
