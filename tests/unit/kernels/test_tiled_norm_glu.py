"""Tiled MLP, RMSNorm and GLU Functions vs the plain modules they replace."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mudpuppy.kernels.apply import apply_kernels
from mudpuppy.kernels.glu import glu
from mudpuppy.kernels.rms_norm import rms_norm, rms_norm_reference
from mudpuppy.kernels.tiled_mlp import auto_num_shards, tiled_mlp
from tests.unit.kernels.conftest import lora_wrap, tiny_model


class _MLP(nn.Module):
    def __init__(self, h=12, i=40):
        super().__init__()
        self.up, self.down = nn.Linear(h, i), nn.Linear(i, h)

    def forward(self, x):
        return self.down(torch.tanh(self.up(x)))


@pytest.mark.parametrize("shards", [2, 3, 7, 50])  # uneven tiles; more shards than tokens
def test_tiled_mlp_matches_whole_sequence(shards):
    torch.manual_seed(0)
    mlp = _MLP().double()
    x = torch.randn(2, 23, 12, dtype=torch.float64, requires_grad=True)
    params = list(mlp.parameters())
    ref = mlp(x)
    ref_grads = torch.autograd.grad((ref * ref).sum(), [x, *params])
    out = tiled_mlp(mlp, x, shards, params)
    grads = torch.autograd.grad((out * out).sum(), [x, *params])
    torch.testing.assert_close(out, ref)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_tiled_mlp_params_train_even_when_input_is_frozen():
    mlp = _MLP()
    x = torch.randn(1, 9, 12)
    out = tiled_mlp(mlp, x, 3, list(mlp.parameters()))
    out.sum().backward()
    assert mlp.up.weight.grad is not None and torch.count_nonzero(mlp.up.weight.grad) > 0


def test_tiled_mlp_under_gradient_checkpointing():
    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(0)
    mlp = _MLP().double()
    x = torch.randn(2, 15, 12, dtype=torch.float64, requires_grad=True)
    params = list(mlp.parameters())
    ref_grads = torch.autograd.grad(mlp(x).pow(2).sum(), [x, *params])
    out = checkpoint(lambda t: tiled_mlp(mlp, t, 4, params), x, use_reentrant=False)
    for got, want in zip(torch.autograd.grad(out.pow(2).sum(), [x, *params]), ref_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_auto_shards():
    assert auto_num_shards(8192, 2048) == 4 and auto_num_shards(10, 2048) == 1


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_rms_norm_matches_reference(dtype, tol):
    torch.manual_seed(0)
    x = torch.randn(3, 11, 33, dtype=dtype, requires_grad=True)
    w = torch.randn(33, dtype=dtype, requires_grad=True)
    dy = torch.randn(3, 11, 33, dtype=dtype)
    got = torch.autograd.grad((rms_norm(x, w, 1e-6) * dy).sum(), [x, w])
    want = torch.autograd.grad((rms_norm_reference(x, w, 1e-6) * dy).sum(), [x, w])
    torch.testing.assert_close(rms_norm(x, w, 1e-6), rms_norm_reference(x, w, 1e-6), rtol=tol, atol=tol)
    for g, r in zip(got, want, strict=True):
        torch.testing.assert_close(g, r, rtol=tol, atol=tol)


@pytest.mark.parametrize("act", [nn.SiLU(), nn.GELU(approximate="tanh")])
def test_glu_matches_reference(act):
    torch.manual_seed(0)
    g = torch.randn(4, 9, 17, dtype=torch.float64, requires_grad=True)
    u = torch.randn(4, 9, 17, dtype=torch.float64, requires_grad=True)
    got = torch.autograd.grad(glu(act, g, u).pow(2).sum(), [g, u])
    want = torch.autograd.grad((act(g) * u).pow(2).sum(), [g, u])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_norm_glu_tiled_on_a_model_match(tmp_path):
    ref = lora_wrap(tiny_model(tmp_path))
    fused = copy.deepcopy(ref)
    lines = apply_kernels(fused, {"liger_rms_norm": True, "liger_glu_activation": True, "tiled_mlp": True,
                                  "tiled_mlp_num_shards": 4})
    assert len(lines) == 3
    ids = torch.randint(0, 1024, (2, 21))
    lr, lf = ref(input_ids=ids, labels=ids).loss, fused(input_ids=ids, labels=ids).loss
    torch.testing.assert_close(lf, lr)
    lr.backward()
    lf.backward()
    ref_p = dict(ref.named_parameters())
    for n, p in fused.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, ref_p[n].grad, rtol=1e-5, atol=1e-6, msg=n)
