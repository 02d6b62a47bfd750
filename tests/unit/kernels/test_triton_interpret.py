"""The Triton kernels (RMSNorm, GLU also inside the LoRA MLP Function, fused linear cross-entropy) vs the
pure-torch references, forward and every gradient, run by Triton's interpreter on CPU tensors
(``TRITON_INTERPRET=1``; no GPU needed).

Triton reads the env var when kernels are defined: conftest imports triton under it, and it is set again per test
(so our ``triton_*`` modules, imported lazily, are interpreted too) while the other kernel tests keep their torch
paths.
Each test also checks the Triton Function really ran (its grad_fn), so a selection bug cannot make it pass on the
torch path. Shapes are small and not powers of two, so masks and multi-block loops are exercised.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")
pytestmark = pytest.mark.timeout(120)


def _interpreted() -> bool:
    """Whether triton itself was imported in interpreter mode (conftest does that on CPU machines)."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.sum, InterpretedFunction) or not hasattr(tl.sum, "run")


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("CUDA machine: the kernels are compiled there; bench/gpu checks them on the GPU")
    assert _interpreted(), "triton was imported before tests/unit/kernels/conftest.py could set TRITON_INTERPRET"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("MUDPUPPY_TRITON", raising=False)


def _grad_fn_names(t: torch.Tensor) -> set[str]:
    seen, todo = set(), [t.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or type(fn).__name__ in seen:
            continue
        seen.add(type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    return seen


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


@pytest.mark.parametrize("shape", [(2, 5, 48), (7, 40)])
def test_rms_norm_matches_reference(shape):
    from mudpuppy.kernels.rms_norm import rms_norm, rms_norm_reference

    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g) * 3
    w = torch.randn(shape[-1], generator=g)
    dy = torch.randn(*shape, generator=g)
    xs, ws = _leaf(x), _leaf(w)
    out = rms_norm(xs, ws, 1e-6)
    assert "TritonRMSNormFunctionBackward" in _grad_fn_names(out)
    out.backward(dy)
    xr, wr = _leaf(x), _leaf(w)
    ref = rms_norm_reference(xr, wr, 1e-6)
    ref.backward(dy)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xs.grad, xr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ws.grad, wr.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("act_name", ["silu", "gelu_pytorch_tanh"])
def test_glu_matches_reference(act_name):
    from transformers.activations import ACT2FN

    from mudpuppy.kernels.glu import glu

    act = ACT2FN[act_name]
    g = torch.Generator().manual_seed(1)
    gate, up, dh = (torch.randn(2, 7, 33, generator=g) * 2 for _ in range(3))
    gs, us = _leaf(gate), _leaf(up)
    out = glu(act, gs, us)
    assert "TritonGLUFunctionBackward" in _grad_fn_names(out)
    out.backward(dh)
    gr, ur = _leaf(gate), _leaf(up)
    ref = act(gr) * ur
    ref.backward(dh)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gs.grad, gr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(us.grad, ur.grad, rtol=1e-4, atol=1e-5)


def test_glu_other_activation_keeps_torch_path():
    from mudpuppy.kernels.glu import glu

    gate = torch.randn(3, 5, requires_grad=True)
    out = glu(torch.nn.ReLU(), gate, torch.randn(3, 5))
    assert "GLUFunctionBackward" in _grad_fn_names(out)
    assert "TritonGLUFunctionBackward" not in _grad_fn_names(out)


@pytest.mark.parametrize(("softcap", "smoothing", "bias", "chunk"), [
    (None, 0.0, False, 1000),
    (None, 0.0, True, 7),     # several chunks, uneven last one
    (5.0, 0.0, False, 16),
    (None, 0.1, True, 1000),
    (3.0, 0.2, True, 9),
])
def test_linear_cross_entropy_matches_reference(softcap, smoothing, bias, chunk):
    from mudpuppy.kernels.linear_ce import linear_cross_entropy, linear_cross_entropy_reference

    g = torch.Generator().manual_seed(2)
    vocab = 2100  # > the interpreter's 1024 block: the online softmax spans three blocks, the last one partial
    hid = torch.randn(2, 13, 16, generator=g)
    w = torch.randn(vocab, 16, generator=g) * 0.3
    b = torch.randn(vocab, generator=g) if bias else None
    y = torch.randint(0, vocab, (2, 13), generator=g)
    y[torch.rand(2, 13, generator=g) < 0.3] = -100
    kw = dict(softcap=softcap, label_smoothing=smoothing)

    def run(fn, **extra):
        leaves = [_leaf(hid), _leaf(w)] + ([_leaf(b)] if b is not None else [])
        loss = fn(leaves[0], leaves[1], y, bias=leaves[2] if b is not None else None, **kw, **extra)
        (loss * 1.7).backward()
        return loss, [t.grad for t in leaves]

    loss, grads = run(linear_cross_entropy, chunk_tokens=chunk)
    ref, ref_grads = run(linear_cross_entropy_reference)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_linear_cross_entropy_uses_triton_kernel(monkeypatch):
    """The fused loss really goes through ``triton_ce.ce_chunk`` when Triton is selected, and not when it is off."""
    import mudpuppy.kernels.triton_ce as tce
    from mudpuppy.kernels.linear_ce import linear_cross_entropy

    calls = []
    real = tce.ce_chunk
    monkeypatch.setattr(tce, "ce_chunk", lambda *a, **k: calls.append(1) or real(*a, **k))
    hid, w = torch.randn(5, 8, requires_grad=True), torch.randn(40, 8, requires_grad=True)
    y = torch.randint(0, 40, (5,))
    linear_cross_entropy(hid, w, y, chunk_tokens=2).backward()
    assert len(calls) == 3
    monkeypatch.setenv("MUDPUPPY_TRITON", "0")
    linear_cross_entropy(hid, w, y, chunk_tokens=2).backward()
    assert len(calls) == 3


def test_tiny_model_with_triton_kernels_matches_plain(tmp_path):
    """RMSNorm + GLU + fused CE swapped into a tiny Llama under the interpreter: loss and every gradient match."""
    import copy

    from mudpuppy.kernels.apply import apply_kernels
    from tests.unit.kernels.conftest import tiny_model

    plain = tiny_model(tmp_path, vocab=300)
    fused = copy.deepcopy(plain)
    cfg = {"plugins": ["axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin",
                       "axolotl.integrations.liger.LigerPlugin"],
           "liger_rms_norm": True, "liger_glu_activation": True}
    assert len(apply_kernels(fused, cfg)) == 3
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 300, (2, 9), generator=g)
    labels = ids.clone()
    labels[:, :3] = -100
    out_p = plain(input_ids=ids, labels=labels)
    out_f = fused(input_ids=ids, labels=labels)
    out_p.loss.backward()
    out_f.loss.backward()
    torch.testing.assert_close(out_f.loss, out_p.loss, rtol=1e-5, atol=1e-5)
    for (name, p), (_, q) in zip(plain.named_parameters(), fused.named_parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)


def test_cpu_without_interpreter_keeps_torch_paths(monkeypatch):
    """On a CPU tensor without TRITON_INTERPRET the pure-torch Functions run (what a CPU install gets)."""
    from mudpuppy.kernels.glu import glu
    from mudpuppy.kernels.rms_norm import rms_norm
    from mudpuppy.kernels.triton_support import use_triton

    monkeypatch.delenv("TRITON_INTERPRET")
    x = torch.randn(3, 8, requires_grad=True)
    assert not use_triton(x)
    assert "RMSNormFunctionBackward" in _grad_fn_names(rms_norm(x, torch.ones(8), 1e-6))
    assert "GLUFunctionBackward" in _grad_fn_names(glu(torch.nn.SiLU(), x, x))
    assert not {"TritonRMSNormFunctionBackward", "TritonGLUFunctionBackward"} & (
        _grad_fn_names(rms_norm(x, torch.ones(8), 1e-6)) | _grad_fn_names(glu(torch.nn.SiLU(), x, x)))


def test_lora_mlp_with_triton_glu_matches_plain(model_pair, monkeypatch):
    """lora_mlp_kernel's Function with the Triton GLU inside: loss and every LoRA gradient match plain peft."""
    import mudpuppy.kernels.triton_glu as tglu
    from mudpuppy.kernels.apply import apply_kernels
    from mudpuppy.kernels.function_class import Compute

    calls = []
    real = tglu.TritonGLUFunction.compute
    monkeypatch.setattr(tglu.TritonGLUFunction, "compute",
                        Compute(real.forward, lambda *a: calls.append(1) or real.backward(*a)))
    plain, fused = model_pair
    apply_kernels(fused, {"adapter": "lora", "lora_dropout": 0.0, "lora_mlp_kernel": True})
    ids = torch.randint(0, 1024, (2, 6), generator=torch.Generator().manual_seed(9))
    for m in (plain, fused):
        m(input_ids=ids, labels=ids).loss.backward()
    assert calls  # the Triton GLU backward really ran
    torch.testing.assert_close(fused(input_ids=ids, labels=ids).loss, plain(input_ids=ids, labels=ids).loss)
    for (name, p), (_, q) in zip(plain.named_parameters(), fused.named_parameters(), strict=True):
        if p.requires_grad:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)


def _lora_reference(x, w, bias, a, b, bb, s):
    """peft's LoRA linear written out: base(x) + s * (B(A(x)) + bias_B), by plain autograd."""
    y = x @ w.t() + s * ((x @ a.t()) @ b.t())
    if bias is not None:
        y = y + bias
    if bb is not None:
        y = y + s * bb
    return y


@pytest.mark.parametrize(("shape", "out", "rank", "base_bias", "lora_bias"), [
    ((2, 9, 40), 24, 4, False, False),   # rank below one 16-wide block: masked
    ((7, 33), 50, 20, True, True),       # rank spans two blocks; in/out/token counts span several tiles
])
def test_lora_linear_matches_reference(shape, out, rank, base_bias, lora_bias):
    """Forward and the gradients of x, A, B (and bias_B) of the fused Q/K/V/O kernel; base weight frozen."""
    from mudpuppy.kernels.lora import Proj
    from mudpuppy.kernels.triton_lora import TritonLoRALinearFunction

    g = torch.Generator().manual_seed(3)
    d = shape[-1]
    base = torch.nn.Linear(d, out, bias=base_bias)
    with torch.no_grad():
        base.weight.copy_(torch.randn(out, d, generator=g) * 0.2)
        if base_bias:
            base.bias.copy_(torch.randn(out, generator=g))
    base.requires_grad_(False)
    x = torch.randn(*shape, generator=g)
    a, b = torch.randn(rank, d, generator=g) * 0.3, torch.randn(out, rank, generator=g) * 0.3
    bb = torch.randn(out, generator=g) if lora_bias else None
    dy = torch.randn(*shape[:-1], out, generator=g)
    s = 1.75
    proj = Proj(base, scaling=s, has_lora=True, has_lora_bias=lora_bias)

    leaves = [_leaf(t) for t in (x, a, b)] + ([_leaf(bb)] if lora_bias else [])
    got = TritonLoRALinearFunction.apply(leaves[0], proj, leaves[1], leaves[2], leaves[3] if lora_bias else None)
    assert "TritonLoRALinearFunctionBackward" in _grad_fn_names(got)
    got.backward(dy)
    refs = [_leaf(t) for t in (x, a, b)] + ([_leaf(bb)] if lora_bias else [])
    want = _lora_reference(refs[0], base.weight, base.bias, refs[1], refs[2], refs[3] if lora_bias else None, s)
    want.backward(dy)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for name, mine, ref in zip(("x", "A", "B", "bias_B"), leaves, refs, strict=False):
        torch.testing.assert_close(mine.grad, ref.grad, rtol=1e-4, atol=1e-5, msg=name)
    assert base.weight.grad is None


def test_lora_linear_kernel_x_without_grad():
    """Frozen input (first layer under gradient checkpointing off): only A and B get gradients, no dx computed."""
    from mudpuppy.kernels.lora import Proj
    from mudpuppy.kernels.triton_lora import TritonLoRALinearFunction

    g = torch.Generator().manual_seed(4)
    base = torch.nn.Linear(20, 18, bias=False).requires_grad_(False)
    x = torch.randn(5, 20, generator=g)
    a, b = _leaf(torch.randn(3, 20, generator=g)), _leaf(torch.randn(18, 3, generator=g))
    TritonLoRALinearFunction.apply(x, Proj(base, scaling=0.5, has_lora=True), a, b, None).sum().backward()
    ar, br = _leaf(a), _leaf(b)
    _lora_reference(x, base.weight, None, ar, br, None, 0.5).sum().backward()
    torch.testing.assert_close(a.grad, ar.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b.grad, br.grad, rtol=1e-4, atol=1e-5)


def test_lora_qkv_o_with_triton_matches_plain(model_pair, monkeypatch):
    """lora_qkv_kernel + lora_o_kernel under the interpreter: every Q/K/V/O goes through the Triton Function,
    and loss and every LoRA gradient match plain peft."""
    import mudpuppy.kernels.triton_lora as tlora
    from mudpuppy.kernels.apply import apply_kernels

    calls = []
    real = tlora.TritonLoRALinearFunction.apply
    monkeypatch.setattr(tlora.TritonLoRALinearFunction, "apply", lambda *a: calls.append(1) or real(*a))
    plain, fused = model_pair
    lines = apply_kernels(fused, {"adapter": "lora", "lora_dropout": 0.0, "lora_qkv_kernel": True,
                                  "lora_o_kernel": True})
    assert len(lines) == 2
    ids = torch.randint(0, 1024, (2, 6), generator=torch.Generator().manual_seed(11))
    loss_p = plain(input_ids=ids, labels=ids).loss
    loss_f = fused(input_ids=ids, labels=ids).loss
    assert len(calls) == 2 * 4  # two layers x (q, k, v, o)
    loss_p.backward()
    loss_f.backward()
    torch.testing.assert_close(loss_f, loss_p, rtol=1e-5, atol=1e-5)
    checked = 0
    for (name, p), (_, q) in zip(plain.named_parameters(), fused.named_parameters(), strict=True):
        if p.requires_grad:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)
            checked += "lora_" in name and any(k in name for k in ("q_proj", "k_proj", "v_proj", "o_proj"))
    assert checked == 2 * 4 * 2  # A and B of every attention projection


def test_lora_linear_cpu_without_interpreter_keeps_torch_function(monkeypatch):
    from mudpuppy.kernels.lora import Proj, fused_linear_forward

    monkeypatch.delenv("TRITON_INTERPRET")
    layer = _peft_linear()
    x = torch.randn(3, 16, requires_grad=True)
    names = _grad_fn_names(fused_linear_forward(layer, x))
    assert "LoRALinearFunctionBackward" in names and "TritonLoRALinearFunctionBackward" not in names
    assert Proj  # the torch reference Function stays importable without triton


def _peft_linear():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.add_module("q_proj", torch.nn.Linear(16, 12))
    wrapped = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj"],
                                               init_lora_weights=False))
    return wrapped.base_model.model.q_proj
