"""Every Triton kernel against its pure-torch reference, forward and every gradient; prints one JSON object.

Run by bench/gpu/checks.py (step 10) in its own process: on a CUDA machine the kernels are compiled for the GPU
at training-sized shapes (fp32 and bf16); with ``--interpret`` (the ``--dry`` path, no GPU) ``TRITON_INTERPRET=1``
is set before triton is first imported and the same checks run on CPU tensors at tiny shapes (fp32 and fp16: the
interpreter multiplies bf16 as raw bits). Each check also
asserts the Triton Function really ran (its ``grad_fn``), so a selection bug cannot pass on the torch path.
Errors are relative (``|got - want| / |want|``, Frobenius) against a reference computed in fp32.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if "--interpret" in sys.argv:
    os.environ["TRITON_INTERPRET"] = "1"
os.environ.pop("MUDPUPPY_TRITON", None)
REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402


def _grad_fns(t: torch.Tensor) -> set[str]:
    seen, todo = set(), [t.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or type(fn).__name__ in seen:
            continue
        seen.add(type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    return seen


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().float(), want.detach().float()
    return float((got - want).norm() / want.norm().clamp_min(1e-12))


def _compare(run: Callable[..., torch.Tensor], ref: Callable[..., torch.Tensor], inputs: list[torch.Tensor],
             grads_of: list[int], dtype: torch.dtype, function: str, dy_scale: float = 1.0) -> dict[str, Any]:
    """Run ``run`` on ``inputs`` cast to ``dtype`` and ``ref`` on fp32 copies; relative errors of y and grads.

    Below fp32 the same ``run`` also goes through the torch path (``MUDPUPPY_TRITON=0``) at that dtype: its own
    rounding error is the yardstick the Triton error is held to (``torch_errors``).
    """
    refs = [t.float().detach().requires_grad_(i in grads_of) for i, t in enumerate(inputs)]
    y_ref = ref(*refs)
    dy = torch.randn(y_ref.shape, generator=torch.Generator(y_ref.device.type).manual_seed(7),
                     device=y_ref.device) * dy_scale
    y_ref.backward(dy)

    def errors_of(triton: bool) -> tuple[dict[str, float], bool]:
        os.environ["MUDPUPPY_TRITON"] = "1" if triton else "0"
        try:
            leaves = [t.to(dtype).detach().requires_grad_(i in grads_of) for i, t in enumerate(inputs)]
            y = run(*leaves)
            ran = not function or function in _grad_fns(y)
            y.backward(dy.to(y.dtype))
        finally:
            os.environ.pop("MUDPUPPY_TRITON", None)
        errs = {"y": _rel(y, y_ref)}
        for i in grads_of:
            errs[f"d{i}"] = _rel(leaves[i].grad, refs[i].grad)
        return errs, ran

    errors, ran = errors_of(True)
    out: dict[str, Any] = {"triton_function_ran": ran, "errors": errors}
    if dtype != torch.float32:
        out["torch_errors"] = errors_of(False)[0]
    return out


def check_all(device: str, big: bool) -> dict[str, Any]:
    from transformers.activations import ACT2FN

    import mudpuppy.kernels.triton_ce as triton_ce
    from mudpuppy.kernels.glu import glu
    from mudpuppy.kernels.linear_ce import linear_cross_entropy, linear_cross_entropy_reference
    from mudpuppy.kernels.lora import Proj, lora_linear
    from mudpuppy.kernels.rms_norm import rms_norm, rms_norm_reference

    ce_calls: list[int] = []
    real_chunk = triton_ce.ce_chunk
    triton_ce.ce_chunk = lambda *a, **k: ce_calls.append(1) or real_chunk(*a, **k)
    g = torch.Generator(device).manual_seed(0)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=device) * scale

    tokens, hidden, inter, out, rank, vocab = (4096, 2048, 5632, 1536, 16, 32000) if big else (19, 40, 33, 24, 4, 300)
    # Triton's interpreter computes bf16 dots on the raw bits (garbage); fp16 takes the same half-precision paths
    dtypes = [torch.float32, torch.bfloat16 if big else torch.float16]
    results: dict[str, Any] = {}
    for dtype in dtypes:
        tag = str(dtype).removeprefix("torch.")
        results[f"rms_norm/{tag}"] = _compare(
            lambda x, w: rms_norm(x, w, 1e-6), lambda x, w: rms_norm_reference(x, w, 1e-6),
            [randn(tokens, hidden, scale=3.0), randn(hidden)], [0, 1], dtype, "TritonRMSNormFunctionBackward")
        act = ACT2FN["silu"]
        results[f"glu_silu/{tag}"] = _compare(
            lambda a, b, act=act: glu(act, a, b), lambda a, b, act=act: act(a) * b,
            [randn(tokens, inter, scale=2.0), randn(tokens, inter)], [0, 1], dtype, "TritonGLUFunctionBackward")
        labels = torch.randint(0, vocab, (tokens,), generator=g, device=device)
        calls = len(ce_calls)
        results[f"linear_ce/{tag}"] = _compare(
            lambda h, w, y=labels: linear_cross_entropy(h, w, y).reshape(1),
            lambda h, w, y=labels: linear_cross_entropy_reference(h, w, y).reshape(1),
            [randn(tokens, hidden, scale=0.5), randn(vocab, hidden, scale=0.05)], [0, 1], dtype, "")
        results[f"linear_ce/{tag}"]["triton_function_ran"] = len(ce_calls) > calls  # the chunk kernel ran
        for name, n_out in (("lora_qkv", out), ("lora_o", hidden)):
            base = torch.nn.Linear(hidden, n_out, bias=False, device=device).requires_grad_(False)
            with torch.no_grad():
                base.weight.copy_(randn(n_out, hidden, scale=hidden ** -0.5))
            w32 = base.weight.detach().clone()
            base.to(dtype)
            proj = Proj(base, scaling=2.0, has_lora=True)

            def ref(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, w32: torch.Tensor = w32) -> torch.Tensor:
                return x @ w32.t() + 2.0 * (x @ a.t()) @ b.t()

            results[f"{name}/{tag}"] = _compare(
                lambda x, a, b, proj=proj: lora_linear(x, proj, a, b, None), ref,
                [randn(tokens, hidden), randn(rank, hidden, scale=0.05), randn(n_out, rank, scale=0.05)],
                [0, 1, 2], dtype, "TritonLoRALinearFunctionBackward")
    return results


def main() -> int:
    interpret = "--interpret" in sys.argv
    device = "cpu" if interpret else "cuda"
    results = check_all(device, big=not interpret)
    ok = True
    for res in results.values():
        if "torch_errors" in res:  # bf16/fp16: no worse than twice torch's own error at that dtype (or 1e-3)
            limits = {k: max(2 * v, 1e-3) for k, v in res["torch_errors"].items()}
        else:  # fp32: reductions in another order only (1e-3 on CUDA: large sums, TF32 if the user enabled it)
            limits = dict.fromkeys(res["errors"], 1e-3 if device == "cuda" else 1e-5)
        res["limits"] = limits
        res["ok"] = all(e <= limits[k] for k, e in res["errors"].items()) and res["triton_function_ran"]
        ok = ok and res["ok"]
    print(json.dumps({"ok": ok, "device": device, "interpreted": interpret, "kernels": results}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
