"""Measure mudpuppy.kernels against the plain paths they replace, as ratios from the same run.

Three measurements (each variant runs in its own subprocess so peak memory is clean):
  loss    peak RSS and time of loss + backward, full-logits reference vs fused linear-CE
          (default: vocab 128256, hidden 2048, 8192 tokens, fp32, frozen LM head as in LoRA)
  lora    one ~0.5B-shaped MLP layer (hidden 896, intermediate 4864, r 16): bytes saved for backward
          (summed over autograd's saved tensors) and fwd+bwd step time, peft default vs lora_mlp_kernel
  tiled   peak RSS of one MLP layer fwd+bwd over growing sequence lengths, plain vs tiled_mlp, and the
          longest length that fits a fixed budget
Peak memory is the process's peak RSS above its level just before the measured region (VmHWM reset via
/proc/self/clear_refs), so it counts every allocation, not only tensors torch knows about.

The tiled workers run with MALLOC_MMAP_THRESHOLD_=1MiB so freed tiles go back to the OS and RSS tracks live
memory rather than glibc heap fragmentation.

Usage: .venv/bin/python bench/kernels.py [--quick] [--only loss,lora,tiled] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _reset_peak() -> int:
    Path("/proc/self/clear_refs").write_text("5")
    return _rss_kib("VmRSS")


def _peak_since(base_kib: int) -> float:
    return (_rss_kib("VmHWM") - base_kib) / 1024.0  # MiB


# ---- workers (run in a subprocess) ----------------------------------------------------------------------------


def worker_loss(variant: str, vocab: int, hidden: int, tokens: int) -> dict:
    import torch

    from mudpuppy.kernels.linear_ce import linear_cross_entropy, linear_cross_entropy_reference

    torch.manual_seed(0)
    h = torch.randn(tokens, hidden).requires_grad_(True)
    w = torch.randn(vocab, hidden) * 0.02
    y = torch.randint(0, vocab, (tokens,))
    y[: tokens // 10] = -100
    fn = linear_cross_entropy if variant == "fused" else linear_cross_entropy_reference
    base = _reset_peak()
    t0 = time.perf_counter()
    loss = fn(h, w, y)
    loss.backward()
    seconds = time.perf_counter() - t0
    return {"peak_mib": _peak_since(base), "seconds": seconds, "loss": loss.item()}


def _mlp_layer(hidden: int, inter: int, r: int, lora: bool = True):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=inter, hidden_act="silu")
    torch.manual_seed(0)

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = LlamaMLP(cfg)

        def forward(self, x):
            return self.mlp(x)

    model = Holder()
    if lora:
        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0,
                                                 target_modules=["gate_proj", "up_proj", "down_proj"]))
    else:
        for p in model.parameters():
            p.requires_grad_(False)
    return model


def worker_lora(variant: str, hidden: int, inter: int, r: int, tokens: int, reps: int) -> dict:
    import torch

    from mudpuppy.kernels.apply import apply_kernels

    model = _mlp_layer(hidden, inter, r)
    if variant == "fused":
        apply_kernels(model, {"adapter": "lora", "lora_mlp_kernel": True})
    x = torch.randn(1, tokens, hidden, requires_grad=True)
    seen: dict[int, int] = {}

    def pack(t):
        seen.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    params = {p.untyped_storage().data_ptr() for p in model.parameters()} | {x.untyped_storage().data_ptr()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    saved = sum(n for ptr, n in seen.items() if ptr not in params)  # activations only: not weights, not input
    out.sum().backward()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        model(x).sum().backward()
        times.append(time.perf_counter() - t0)
    return {"saved_mib": saved / 2**20, "seconds": statistics.median(times)}


def worker_tiled(variant: str, hidden: int, inter: int, r: int, tokens: int) -> dict:
    import torch

    from mudpuppy.kernels.apply import apply_kernels

    model = _mlp_layer(hidden, inter, r)
    if variant == "tiled":
        apply_kernels(model, {"tiled_mlp": True})
    x = torch.randn(1, tokens, hidden, requires_grad=True)
    model(x[:, :64]).sum().backward()  # warm up allocator and threads outside the measured region
    base = _reset_peak()
    t0 = time.perf_counter()
    model(x).sum().backward()
    return {"peak_mib": _peak_since(base), "seconds": time.perf_counter() - t0}


WORKERS = {"loss": worker_loss, "lora": worker_lora, "tiled": worker_tiled}


def run_worker(kind: str, threads: int, **kwargs) -> dict:
    cmd = [sys.executable, str(HERE), "--worker", kind, "--threads", str(threads), "--args", json.dumps(kwargs)]
    env = dict(os.environ)
    if kind == "tiled":  # large blocks straight from/to the OS, so RSS tracks live memory, not heap fragmentation
        env["MALLOC_MMAP_THRESHOLD_"] = "1048576"
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} {kwargs} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- driver ---------------------------------------------------------------------------------------------------


def bench_loss(quick: bool, threads: int) -> list[str]:
    size = dict(vocab=32768, hidden=1024, tokens=2048) if quick else dict(vocab=128256, hidden=2048, tokens=8192)
    ref = run_worker("loss", threads, variant="reference", **size)
    fused = run_worker("loss", threads, variant="fused", **size)
    assert abs(ref["loss"] - fused["loss"]) < 1e-3 * abs(ref["loss"]), (ref, fused)
    return [
        f"### Loss: vocab {size['vocab']}, hidden {size['hidden']}, {size['tokens']} tokens (10% masked), fp32, "
        "frozen LM head, loss + backward",
        "",
        "| path | peak RSS (MiB) | time (s) |",
        "|---|---|---|",
        f"| reference (full logits, F.cross_entropy) | {ref['peak_mib']:.0f} | {ref['seconds']:.2f} |",
        f"| fused linear-CE | {fused['peak_mib']:.0f} | {fused['seconds']:.2f} |",
        f"| **ratio** | **{ref['peak_mib'] / max(fused['peak_mib'], 1):.1f}x less memory** | "
        f"**{fused['seconds'] / ref['seconds']:.2f}x time** |",
        "",
    ]


def bench_lora(quick: bool, threads: int) -> list[str]:
    size = dict(hidden=896, inter=4864, r=16, tokens=512 if quick else 2048, reps=3 if quick else 5)
    ref = run_worker("lora", threads, variant="peft", **size)
    fused = run_worker("lora", threads, variant="fused", **size)
    return [
        f"### LoRA MLP (Qwen2.5-0.5B shape: hidden {size['hidden']}, intermediate {size['inter']}, r {size['r']}), "
        f"{size['tokens']} tokens, fp32, one layer fwd+bwd (median of {size['reps']})",
        "",
        "| path | activations saved for backward (MiB / layer) | step time (ms) |",
        "|---|---|---|",
        f"| peft default | {ref['saved_mib']:.1f} | {ref['seconds'] * 1e3:.1f} |",
        f"| lora_mlp_kernel | {fused['saved_mib']:.1f} | {fused['seconds'] * 1e3:.1f} |",
        f"| **ratio** | **{ref['saved_mib'] / fused['saved_mib']:.2f}x less "
        f"({ref['saved_mib'] - fused['saved_mib']:.1f} MiB saved)** | **{fused['seconds'] / ref['seconds']:.2f}x** |",
        "",
    ]


def bench_tiled(quick: bool, threads: int) -> list[str]:
    lengths = [1024, 2048, 4096] if quick else [2048, 4096, 8192, 16384]
    budget = 256 if quick else 1024
    rows, fits = [], {"plain": 0, "tiled": 0}
    for n in lengths:
        res = {v: run_worker("tiled", threads, variant=v, hidden=896, inter=4864, r=16, tokens=n)
               for v in ("plain", "tiled")}
        for v, r in res.items():
            if r["peak_mib"] <= budget:
                fits[v] = n
        rows.append(f"| {n} | {res['plain']['peak_mib']:.0f} | {res['tiled']['peak_mib']:.0f} | "
                    f"{res['plain']['peak_mib'] / max(res['tiled']['peak_mib'], 1):.1f}x | "
                    f"{res['tiled']['seconds'] / res['plain']['seconds']:.2f}x |")
    return [
        "### Tiled MLP (LoRA MLP layer, hidden 896, intermediate 4864, fp32, auto shards = ceil(seq/hidden))",
        "",
        "| seq len | plain peak (MiB) | tiled peak (MiB) | memory ratio | tiled time / plain |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Longest tested sequence within a {budget} MiB budget: plain {fits['plain'] or '<' + str(lengths[0])}, "
        f"tiled {fits['tiled'] or '<' + str(lengths[0])}.",
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not for BENCHMARKS.md)")
    ap.add_argument("--only", default="loss,lora,tiled")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker")
    ap.add_argument("--args")
    args = ap.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(WORKERS[args.worker](**json.loads(args.args))))
        return
    for name in args.only.split(","):  # each table as soon as it is measured
        lines = {"loss": bench_loss, "lora": bench_lora, "tiled": bench_tiled}[name](args.quick, args.threads)
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
