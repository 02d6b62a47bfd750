"""LoRA Q/K/V/O projections as Triton matmuls with the low-rank path fused into the base matmul's epilogue.

``y = x W^T + bias + s (x A^T) B^T (+ s bias_B)`` is one tiled kernel, ``_matmul_lowrank``: each output tile
accumulates ``x W^T`` over K, then adds ``s * P Q`` (here ``P = x A^T`` of width r, ``Q = B^T``) and the bias
before the single store, so the [tokens x out] LoRA term is never written to memory on its own and ``y`` is not
read back for an in-place add. Backward reuses the same kernel through strides (no transposed copies):
``dx = dy W + (s dy B) A`` is the same shape of problem as the forward, and the small ``dA``, ``dB`` and
``x A^T`` products run through it without the low-rank term.

The compute pair of ``TritonLoRALinearFunction``, which ``lora.lora_linear_function`` builds exactly as it builds
the pure-torch ``LoRALinearFunction`` (the reference, kept for CPU), so the contract is the same: saves only ``x``,
base weight frozen (QLoRA 4-bit weights dequantised by ``Proj.weight`` in forward and again in backward), dropout
0, bias on the base layer and on ``lora_B`` supported, autocast resolved to one compute dtype up front. fp32
inputs use IEEE fp32 dots unless ``torch.backends.cuda.matmul.allow_tf32`` is on, as torch's own matmul does.
Imported only when a kernel runs (see ``triton_support``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mudpuppy.kernels.function_class import Compute
from mudpuppy.kernels.lora import Proj, lora_linear_function


@triton.jit
def _matmul_lowrank(X, W, P, Q, BIAS, Y, M, N, K, R, alpha, scale,
                    s_xm, s_xk, s_wk, s_wn, s_pm, s_pr, s_qr, s_qn, s_ym, s_yn,
                    HAS_LOWRANK: tl.constexpr, HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
                    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BR: tl.constexpr):
    """Y[M, N] = alpha * X[M, K] @ W[K, N] + scale * P[M, R] @ Q[R, N] + BIAS[N], fp32 accumulation.

    Every operand is addressed through its strides, so a transposed view costs nothing.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    m_ok = rm < M
    n_ok = rn < N
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        rk = k0 + tl.arange(0, BK)
        k_ok = rk < K
        x = tl.load(X + rm[:, None] * s_xm + rk[None, :] * s_xk, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(W + rk[:, None] * s_wk + rn[None, :] * s_wn, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(x, w, acc, input_precision=PRECISION)
    acc = acc * alpha
    if HAS_LOWRANK:
        low = tl.zeros((BM, BN), dtype=tl.float32)
        for r0 in range(0, R, BR):
            rr = r0 + tl.arange(0, BR)
            r_ok = rr < R
            p = tl.load(P + rm[:, None] * s_pm + rr[None, :] * s_pr, mask=m_ok[:, None] & r_ok[None, :], other=0.0)
            q = tl.load(Q + rr[:, None] * s_qr + rn[None, :] * s_qn, mask=r_ok[:, None] & n_ok[None, :], other=0.0)
            low = tl.dot(p, q, low, input_precision=PRECISION)
        acc += scale * low
    if HAS_BIAS:
        acc += tl.load(BIAS + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + rm[:, None] * s_ym + rn[None, :] * s_yn, acc.to(Y.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])


def _blocks(t: torch.Tensor) -> tuple[int, int, int, int]:
    """(BM, BN, BK, BR): tensor-core sized tiles on CUDA, the smallest legal dot (16) under the interpreter."""
    return (64, 64, 32, 16) if t.is_cuda else (16, 16, 16, 16)


def _precision(t: torch.Tensor) -> str:
    return "tf32" if t.is_cuda and torch.backends.cuda.matmul.allow_tf32 else "ieee"


def matmul_lowrank(x: torch.Tensor, w: torch.Tensor, *, alpha: float = 1.0, p: torch.Tensor | None = None,
                   q: torch.Tensor | None = None, scale: float = 0.0, bias: torch.Tensor | None = None,
                   out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``alpha * x @ w + scale * p @ q + bias`` for 2-d operands (any strides; pass ``.t()`` views freely)."""
    m, k = x.shape
    k2, n = w.shape
    assert k == k2, (x.shape, w.shape)
    y = torch.empty((m, n), dtype=out_dtype or x.dtype, device=x.device)
    if m == 0 or n == 0:
        return y
    lowrank = p is not None and q is not None and p.shape[1] > 0
    r = p.shape[1] if lowrank else 0
    p_ = p if lowrank else x
    q_ = q if lowrank else w
    bm, bn, bk, br = _blocks(x)
    grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))
    _matmul_lowrank[grid](
        x, w, p_, q_, bias if bias is not None else y, y, m, n, k, r, float(alpha), float(scale),
        x.stride(0), x.stride(1), w.stride(0), w.stride(1), p_.stride(0), p_.stride(1), q_.stride(0), q_.stride(1),
        y.stride(0), y.stride(1),
        HAS_LOWRANK=lowrank, HAS_BIAS=bias is not None, PRECISION=_precision(x), BM=bm, BN=bn, BK=bk, BR=br,
    )
    return y


def _forward(x: torch.Tensor, proj: Proj, a: torch.Tensor, b: torch.Tensor,
             bb: torch.Tensor | None) -> torch.Tensor:
    dtype = x.dtype
    w = proj.weight(dtype)
    a_, b_ = a.to(dtype), b.to(dtype)
    xa = matmul_lowrank(x, a_.t())  # [n, r]
    bias = proj.bias(dtype)
    if bb is not None:  # bias_B enters scaled by s; folded into the one bias vector of the epilogue
        bias = bb.to(dtype) * proj.scaling if bias is None else bias + bb.to(dtype) * proj.scaling
    return matmul_lowrank(x, w.t(), p=xa, q=b_.t(), scale=proj.scaling, bias=bias)


def _backward(x: torch.Tensor, dy: torch.Tensor, proj: Proj, a: torch.Tensor, b: torch.Tensor,
              bb: torch.Tensor | None, need_x: bool) -> tuple[torch.Tensor | None, ...]:
    """(dx, dA, dB, dbias_B); dx is None when not needed."""
    dtype = dy.dtype
    s = proj.scaling
    a_, b_ = a.to(dtype), b.to(dtype)
    dy_b = matmul_lowrank(dy, b_, alpha=s)  # s * dy B: [n, r]
    da = matmul_lowrank(dy_b.t(), x, out_dtype=a.dtype)  # (s dy B)^T x: [r, in]
    xa = matmul_lowrank(x, a_.t())  # recomputed rather than saved
    db = matmul_lowrank(dy.t(), xa, alpha=s, out_dtype=b.dtype)  # s dy^T (x A^T): [out, r]
    dbb = (dy.sum(0) * s).to(bb.dtype) if bb is not None else None
    dx = None
    if need_x:
        w = proj.weight(dtype)
        dx = matmul_lowrank(dy, w, p=dy_b, q=a_, scale=1.0)  # dy W + (s dy B) A, one kernel
    return dx, da, db, dbb


TritonLoRALinearFunction = lora_linear_function("TritonLoRALinearFunction", Compute(_forward, _backward))
