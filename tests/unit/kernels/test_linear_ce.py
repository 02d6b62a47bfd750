"""Fused linear cross-entropy vs the plain full-logits path: loss and every gradient."""

from __future__ import annotations

import pytest
import torch

from mudpuppy.kernels.linear_ce import chunk_tokens_for, linear_cross_entropy, linear_cross_entropy_reference

pytestmark = pytest.mark.timeout(300)

torch.manual_seed(0)


def _inputs(b=3, t=37, h=16, v=101, dtype=torch.float32, bias=False, masked=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    hid = torch.randn(b, t, h, dtype=dtype, generator=g).requires_grad_(True)
    w = (torch.randn(v, h, dtype=dtype, generator=g) * 0.3).requires_grad_(True)
    bb = torch.randn(v, dtype=dtype, generator=g).requires_grad_(True) if bias else None
    y = torch.randint(0, v, (b, t), generator=g)
    y[torch.rand(b, t, generator=g) < masked] = -100
    return hid, w, bb, y


def _grads(fn, hid, w, bb, y, **kw):
    loss = fn(hid, w, y, bias=bb, **kw)
    params = [hid, w] + ([bb] if bb is not None else [])
    return loss, torch.autograd.grad(loss * 1.7, params)  # non-unit upstream grad exercises the backward scale


@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])  # 7 and 64 do not divide the 111 tokens
def test_matches_reference_fp64(softcap, smoothing, bias, chunk):
    hid, w, bb, y = _inputs(dtype=torch.float64, bias=bias)
    kw = dict(softcap=softcap, label_smoothing=smoothing)
    loss, grads = _grads(linear_cross_entropy, hid, w, bb, y, chunk_tokens=chunk, **kw)
    ref, ref_grads = _grads(linear_cross_entropy_reference, hid, w, bb, y, **kw)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_matches_reference_fp32_tight():
    hid, w, bb, y = _inputs(b=2, t=129, h=48, v=517, bias=True)
    loss, grads = _grads(linear_cross_entropy, hid, w, bb, y, chunk_tokens=50)
    ref, ref_grads = _grads(linear_cross_entropy_reference, hid, w, bb, y)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_masked_tokens_get_zero_grad_and_do_not_count():
    hid, w, _, y = _inputs(masked=0.0)
    y[1] = -100
    loss, (gh, _) = _grads(linear_cross_entropy, hid, w, None, y, chunk_tokens=5)
    assert torch.count_nonzero(gh[1]) == 0
    only = linear_cross_entropy(hid[[0, 2]], w, y[[0, 2]])
    torch.testing.assert_close(loss, only)


def test_all_masked_gives_zero_loss_not_nan():
    hid, w, _, y = _inputs()
    y[:] = -100
    loss = linear_cross_entropy(hid, w, y)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(hid.grad) == 0


def test_gradient_accumulation_with_num_items_equals_full_batch():
    """Two micro-batches normalised by the global real-token count sum to the full batch's mean gradient."""
    hid, w, _, y = _inputs(b=4, t=23, masked=0.4, dtype=torch.float64)
    full = linear_cross_entropy_reference(hid, w, y)
    full_grads = torch.autograd.grad(full, [hid, w])
    n_items = (y != -100).sum()
    gw = torch.zeros_like(w)
    gh = torch.zeros_like(hid)
    total = 0.0
    for part in (slice(0, 1), slice(1, 4)):  # uneven micro-batches with different real-token counts
        h_part = hid[part].detach().requires_grad_(True)
        loss = linear_cross_entropy(h_part, w, y[part], num_items_in_batch=n_items, chunk_tokens=9)
        dh, dw = torch.autograd.grad(loss, [h_part, w])
        gh[part] += dh
        gw += dw
        total += loss.item()
    assert total == pytest.approx(full.item(), rel=1e-12)
    torch.testing.assert_close(gh, full_grads[0])
    torch.testing.assert_close(gw, full_grads[1])


def test_frozen_head_gets_no_grad_and_no_grad_mode_works():
    hid, w, _, y = _inputs()
    w = w.detach()
    loss = linear_cross_entropy(hid, w, y, chunk_tokens=8)
    loss.backward()
    assert w.grad is None and hid.grad is not None
    with torch.no_grad():
        again = linear_cross_entropy(hid, w, y, chunk_tokens=8)
    torch.testing.assert_close(again, loss.detach())


def test_bf16_close_to_fp32_reference():
    hid, w, _, y = _inputs(b=2, t=40, h=32, v=300)
    loss = linear_cross_entropy(hid.to(torch.bfloat16), w.to(torch.bfloat16), y, chunk_tokens=16)
    ref = linear_cross_entropy_reference(hid, w, y)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) < 2e-2


def test_chunk_size_scales_with_vocab():
    assert chunk_tokens_for(128_256) == 261
    assert chunk_tokens_for(10**9) == 1
