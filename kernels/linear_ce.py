"""Linear + cross-entropy without materialising the full logits (the idea behind Cut Cross Entropy / Liger FLCE).

A causal LM's loss needs ``hidden @ lm_head.T`` only to reduce it to one number per token; at vocab 128k and 8k
tokens that is 4 GiB of fp32 logits plus as much again for their gradient. Here tokens whose label is the ignore
index are dropped first, the rest are processed in chunks, and each chunk's gradient w.r.t. the hidden states (and
the LM head, when it trains) is computed right away in the forward pass, so the backward pass only scales what is
stored. Peak extra memory is one chunk of logits; the matmul count is the same as the plain path's.

On CUDA (with ``triton`` installed) the per-chunk softmax/loss/gradient step is one Triton kernel
(``triton_ce``, online softmax over vocab blocks); elsewhere it is the in-place torch code below.
``linear_cross_entropy_reference`` is the plain-torch path both are tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
# Elements of one fp32 logits chunk (32M = 128 MiB): big enough for efficient matmuls, small next to the full logits.
DEFAULT_CHUNK_ELEMENTS = 1 << 25


def chunk_tokens_for(vocab_size: int, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> int:
    return max(1, chunk_elements // max(1, vocab_size))


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half inputs (as HF upcasts logits), the input's own dtype when wider."""
    return torch.promote_types(dtype, torch.float32)


class _LinearCrossEntropy(torch.autograd.Function):
    """Sum of per-token losses over the given (already unmasked) tokens; gradients computed in forward.

    One logits buffer is reused for every chunk and transformed in place (logits -> softmax -> d loss/d logits):
    fresh chunk-sized allocations would cost a page-faulting zero-fill each on CPU.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, y, softcap, smoothing, chunk):
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        n, vocab = h.shape[0], weight.shape[0]
        acc = _acc_dtype(h.dtype)
        total = torch.zeros((), dtype=acc, device=h.device)
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=h.device) if need_w else None
        grad_b = torch.zeros(vocab, dtype=acc, device=h.device) if need_b else None
        rows = min(chunk, n)
        buf = torch.empty(rows, vocab, dtype=acc, device=h.device)
        raw = buf if acc == h.dtype else torch.empty(rows, vocab, dtype=h.dtype, device=h.device)
        tanh_buf = torch.empty_like(buf) if softcap is not None else None
        w_t = weight.t()
        fused = _triton_ce(h)
        for start in range(0, n, chunk):
            hc, yc = h[start:start + chunk], y[start:start + chunk]
            m = hc.shape[0]
            z = buf[:m]
            torch.matmul(hc, w_t, out=raw[:m])
            if fused is not None:  # Triton: loss per row and d loss / d logits into buf in one kernel
                total += fused(raw[:m], z if (need_h or need_w or need_b) else None, bias, yc, softcap,
                               smoothing).sum()
                if need_h or need_w or need_b:
                    dzc = z if raw is buf else raw[:m].copy_(z)
                    _accumulate(z, dzc, hc, weight, acc, grad_h, grad_w, grad_b, start)
                continue
            if raw is not buf:
                z.copy_(raw[:m])
            if bias is not None:
                z += bias.to(acc)
            t = None
            if tanh_buf is not None:  # z = cap * tanh(x / cap)
                t = tanh_buf[:m]
                torch.tanh(z.div_(softcap), out=t)
                torch.mul(t, softcap, out=z)
            z_y = z.gather(1, yc[:, None]).squeeze(1)
            z_mean = z.mean(dim=-1) if smoothing else None
            z_max = z.amax(dim=-1, keepdim=True)
            p = z.sub_(z_max).exp_()  # z's buffer now holds exp(z - max)
            sum_exp = p.sum(dim=-1, keepdim=True)
            lse = (z_max + sum_exp.log()).squeeze(1)
            nll = lse - z_y
            if z_mean is not None:
                nll = (1.0 - smoothing) * nll + smoothing * (lse - z_mean)
            total += nll.sum()
            if not (need_h or need_w or need_b):
                continue
            # d loss / d z = softmax(z) - (1 - eps) * onehot(y) - eps / V, in place in the same buffer.
            dz = p.div_(sum_exp)
            dz.scatter_add_(1, yc[:, None], torch.full_like(z_y[:, None], -(1.0 - smoothing)))
            if smoothing:
                dz.sub_(smoothing / vocab)
            if t is not None:  # d(cap * tanh(x / cap)) / dx = 1 - tanh^2
                dz.mul_(t.square_().neg_().add_(1.0))
            dzc = dz if raw is buf else raw[:m].copy_(dz)
            _accumulate(dz, dzc, hc, weight, acc, grad_h, grad_w, grad_b, start)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (h.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        scale = grad_out
        out_h = None if grad_h is None else (grad_h * scale.to(grad_h.dtype)).to(h_dtype)
        out_w = None if grad_w is None else (grad_w * scale).to(w_dtype)
        out_b = None if grad_b is None else (grad_b * scale).to(b_dtype)
        return out_h, out_w, out_b, None, None, None, None


def _accumulate(dz, dzc, hc, weight, acc, grad_h, grad_w, grad_b, start) -> None:
    """Chunk's share of the input gradients from its ``d loss / d logits`` (``dzc``: the same in ``h``'s dtype)."""
    if grad_h is not None:
        torch.matmul(dzc, weight, out=grad_h[start:start + dz.shape[0]])
    if grad_w is not None:
        grad_w.addmm_(dz.t(), hc.to(acc))
    if grad_b is not None:
        grad_b += dz.sum(0)


def _triton_ce(h: torch.Tensor):
    """The Triton per-chunk loss kernel when it applies (CUDA or interpreter, up to fp32), else None."""
    from mudpuppy.kernels.triton_support import use_triton

    if h.dtype not in (torch.float32, torch.float16, torch.bfloat16) or not use_triton(h):
        return None
    from mudpuppy.kernels.triton_ce import ce_chunk

    return ce_chunk


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    label_smoothing: float = 0.0,
    softcap: float | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """Cross-entropy of ``hidden @ weight.T (+ bias)`` against ``labels`` (already aligned, no shift here).

    Mean over real (non-ignored) tokens, or the sum divided by ``num_items_in_batch`` when given, which is how
    HF's Trainer keeps the loss normalised over real tokens across gradient accumulation.
    """
    h = hidden.reshape(-1, hidden.shape[-1])
    y = labels.reshape(-1).to(h.device)
    keep = (y != ignore_index).nonzero().squeeze(1)
    h, y = h.index_select(0, keep), y.index_select(0, keep)
    chunk = chunk_tokens or chunk_tokens_for(weight.shape[0])
    total = _LinearCrossEntropy.apply(h, weight, bias, y, softcap, float(label_smoothing), chunk)
    if num_items_in_batch is None:
        return total / keep.numel() if keep.numel() else total
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def linear_cross_entropy_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    label_smoothing: float = 0.0,
    softcap: float | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """The plain path: full logits, upcast to fp32, ``F.cross_entropy`` (what HF's ForCausalLMLoss does)."""
    logits = F.linear(hidden, weight, bias).to(_acc_dtype(hidden.dtype))
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    logits = logits.reshape(-1, logits.shape[-1])
    y = labels.reshape(-1)
    reduction = "mean" if num_items_in_batch is None else "sum"
    loss = F.cross_entropy(logits, y, ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)
    return loss if num_items_in_batch is None else loss / num_items_in_batch
