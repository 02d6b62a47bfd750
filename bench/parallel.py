"""Tokens/s of one training step on 2 ranks: replicated baseline vs FSDP2 vs context parallel (allgather, ulysses).

Run: .venv/bin/torchrun --nproc-per-node 2 bench/parallel.py [--width 512 --steps 5]
On CPU this is gloo on a small Llama shape (what CI can run); on a GPU machine the same script uses NCCL. The
baseline is the same model unsharded on every rank with gradients all-reduced by hand (plain data parallel).
Ratios are against that baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.distributed as dist


def model_of(hidden: int, layers: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=1024, hidden_size=hidden, intermediate_size=hidden * 2,
                                        num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=4,
                                        max_position_embeddings=8192, use_cache=False, attn_implementation="sdpa"))


def timed(step, steps: int) -> float:
    step()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    dist.barrier()
    return (time.perf_counter() - start) / steps


def main() -> None:
    from mudpuppy.runtime.parallel.context_parallel import ContextParallel
    from mudpuppy.runtime.parallel.dist import finish, init_process_group
    from mudpuppy.runtime.parallel.fsdp import shard_model

    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    a = parser.parse_args()
    init_process_group()
    world = dist.get_world_size()
    ids = torch.randint(3, 1024, (world, a.width), generator=torch.Generator().manual_seed(1))
    rows = {"input_ids": ids, "labels": ids.clone()}
    mine = {k: v[dist.get_rank():dist.get_rank() + 1] for k, v in rows.items()}
    tokens = world * a.width  # tokens per step over all ranks
    results = {}

    base = model_of(a.hidden, a.layers)

    def dp_step() -> None:
        base(**mine).loss.backward()
        for p in base.parameters():
            dist.all_reduce(p.grad)
        base.zero_grad()

    results["data parallel (baseline)"] = timed(dp_step, a.steps)
    fsdp = shard_model(model_of(a.hidden, a.layers))

    def fsdp_step() -> None:
        fsdp(**mine).loss.backward()
        fsdp.zero_grad()

    results["FSDP2 (2 ranks)"] = timed(fsdp_step, a.steps)
    for mode in ("allgather", "ulysses"):
        cpm = model_of(a.hidden, a.layers)
        ContextParallel(size=world, rank=dist.get_rank(), group=dist.group.WORLD, mode=mode).attach(cpm)

        def cp_step(cpm=cpm) -> None:
            for r in range(world):  # every row, split over the 2 ranks: same tokens per step as the baseline
                cpm(**{k: v[r:r + 1] for k, v in rows.items()}).loss.backward()
            for p in cpm.parameters():
                dist.all_reduce(p.grad)
            cpm.zero_grad()

        results[f"context parallel x{world} ({mode})"] = timed(cp_step, a.steps)
    if dist.get_rank() == 0:
        baseline = results["data parallel (baseline)"]
        print(f"| setup (seq {a.width}, hidden {a.hidden}, {a.layers} layers, {world} ranks) | s/step | tokens/s "
              "| vs baseline |\n|---|---|---|---|")
        for name, sec in results.items():
            print(f"| {name} | {sec:.3f} | {tokens / sec:.0f} | {baseline / sec:.2f}x |")
    finish()


if __name__ == "__main__":
    main()
