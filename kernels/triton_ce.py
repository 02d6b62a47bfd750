"""Cross-entropy over one chunk of logits rows as a Triton kernel: online softmax, gradient written in place.

Used by ``linear_ce._LinearCrossEntropy`` for each chunk (the matmuls stay cuBLAS): one program per row walks the
vocabulary in blocks keeping a running max and rescaled sum of exponentials (online softmax), so a row is read
twice (once for the log-sum-exp, once to write ``d loss / d logits``) and no second chunk-sized temporary is
allocated. Handles bias, logit softcapping ``cap * tanh(z / cap)`` and label smoothing like the torch path.
Imported only when a kernel runs (see ``triton_support``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _logits(Z, B, row_off, cols, mask, cap, HAS_BIAS: tl.constexpr, SOFTCAP: tl.constexpr):
    """(capped logits, tanh term) in fp32 for the given columns."""
    z = tl.load(Z + row_off + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        z += tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
    t = z
    if SOFTCAP:
        t = 2.0 * tl.sigmoid(2.0 * (z / cap)) - 1.0
        z = cap * t
    return z, t


@triton.jit
def _ce_rows(Z, DZ, B, Y, NLL, stride_z, stride_dz, vocab, cap, smoothing,
             HAS_BIAS: tl.constexpr, SOFTCAP: tl.constexpr, SMOOTH: tl.constexpr, NEED_GRAD: tl.constexpr,
             BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    z_row = row * stride_z
    y = tl.load(Y + row)
    m = -float("inf")
    s = 0.0
    zsum = 0.0
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < vocab
        z, _ = _logits(Z, B, z_row, cols, mask, cap, HAS_BIAS, SOFTCAP)
        zm = tl.where(mask, z, -float("inf"))
        m_new = tl.maximum(m, tl.max(zm, axis=0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(zm - m_new), axis=0)
        m = m_new
        if SMOOTH:
            zsum += tl.sum(tl.where(mask, z, 0.0), axis=0)
    lse = m + tl.log(s)
    y_off = tl.arange(0, 1) + y
    z_y, _ = _logits(Z, B, z_row, y_off, y_off >= 0, cap, HAS_BIAS, SOFTCAP)
    nll = lse - tl.sum(z_y, axis=0)
    if SMOOTH:
        nll = (1.0 - smoothing) * nll + smoothing * (lse - zsum / vocab)
    tl.store(NLL + row, nll)
    if NEED_GRAD:
        dz_row = row * stride_dz
        for start in range(0, vocab, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < vocab
            z, t = _logits(Z, B, z_row, cols, mask, cap, HAS_BIAS, SOFTCAP)
            dz = tl.exp(z - lse) - tl.where(cols == y, 1.0 - smoothing, 0.0)
            if SMOOTH:
                dz -= smoothing / vocab
            if SOFTCAP:
                dz *= 1.0 - t * t
            tl.store(DZ + dz_row + cols, dz.to(DZ.dtype.element_ty), mask=mask)


def ce_chunk(z: torch.Tensor, dz: torch.Tensor | None, bias: torch.Tensor | None, y: torch.Tensor,
             softcap: float | None, smoothing: float) -> torch.Tensor:
    """Per-row loss of logits ``z`` (rows x vocab, any float dtype) against ``y``; when ``dz`` is given (same
    shape, may be ``z`` itself) it receives ``d loss_row / d z`` (before bias/softcap: w.r.t. the raw matmul)."""
    rows, vocab = z.shape
    nll = torch.empty(rows, dtype=torch.float32, device=z.device)
    if rows == 0:
        return nll
    block = min(triton.next_power_of_2(vocab), 4096 if z.is_cuda else 1024)
    out = z if dz is None else dz
    _ce_rows[(rows,)](z, out, z if bias is None else bias, y.contiguous(), nll, z.stride(0), out.stride(0), vocab,
                      float(softcap or 1.0), float(smoothing), HAS_BIAS=bias is not None,
                      SOFTCAP=softcap is not None, SMOOTH=bool(smoothing), NEED_GRAD=dz is not None, BLOCK=block)
    return nll
