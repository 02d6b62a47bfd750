"""Run under torchrun (2 ranks): context parallelism and direct FSDP2 against single-process results.

One launch checks several things because each launch costs ~5 s of imports. Results go to $MP_RESULT (JSON)
for tests/distributed/test_parallel.py to assert on; the sharded checkpoint goes to $MP_CKPT.
"""
from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist


def tiny_model(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         attn_implementation="sdpa", use_cache=False)
    return LlamaForCausalLM(config)


def packed_batch(seed: int = 1, batch: int = 2, width: int = 30):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, 128, (batch, width), generator=g)
    position_ids = torch.zeros((batch, width), dtype=torch.long)
    for b in range(batch):
        cuts = sorted(torch.randperm(width - 2, generator=g)[:2].add(1).tolist())
        bounds = [0, *cuts, width]
        for s, e in zip(bounds, bounds[1:], strict=False):
            position_ids[b, s:e] = torch.arange(e - s)
    labels = input_ids.clone()
    labels[position_ids == 0] = -100
    labels[:, -3:] = -100  # a padded tail
    return {"input_ids": input_ids, "position_ids": position_ids, "labels": labels}


def reference_attention(q, k, v, position_ids):
    import torch.nn.functional as F

    seg = torch.cumsum((position_ids == 0).long(), 1)
    n = q.shape[2]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    mask = (causal[None] & (seg[:, :, None] == seg[:, None, :]))[:, None]
    rep = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), attn_mask=mask)


def check_attention(cp, results, mode, stride):
    cp.mode, cp.heads_k_stride = mode, stride
    torch.manual_seed(5)
    batch = packed_batch(seed=3, width=32)
    B, H, Hkv, L, D = 2, 4, 2, 32, 8
    q = torch.randn(B, H, L, D, requires_grad=True)
    k = torch.randn(B, Hkv, L, D, requires_grad=True)
    v = torch.randn(B, Hkv, L, D, requires_grad=True)
    out_ref = reference_attention(q, k, v, batch["position_ids"])
    grad_out = torch.randn_like(out_ref)
    gq, gk, gv = torch.autograd.grad(out_ref, (q, k, v), grad_out)

    cp.shard_inputs(batch)
    chunk = L // cp.size
    sl = slice(cp.rank * chunk, (cp.rank + 1) * chunk)
    lq, lk, lv = (t[:, :, sl].detach().clone().requires_grad_(True) for t in (q, k, v))

    class M:
        training = True

    out, _ = cp.attention(M(), lq, lk, lv, None)
    out = out.transpose(1, 2)  # back to [B,H,L,D]
    lgq, lgk, lgv = torch.autograd.grad(out, (lq, lk, lv), grad_out[:, :, sl].contiguous())
    key = f"attn_{mode}_stride{stride}"
    results[key] = {
        "out": (out - out_ref[:, :, sl]).abs().max().item(),
        "dq": (lgq - gq[:, :, sl]).abs().max().item(),
        "dk": (lgk - gk[:, :, sl]).abs().max().item(),
        "dv": (lgv - gv[:, :, sl]).abs().max().item(),
    }


def check_training_step(results, mode):
    """cp=2 loss and gradients (after the DP all-reduce) vs cp=1 on the full batch in this process."""
    from mudpuppy.runtime.parallel.context_parallel import ContextParallel

    batch = packed_batch(seed=11, width=31)  # odd width: exercises the CP padding
    n_items = (batch["labels"][:, 1:] != -100).sum()
    ref = tiny_model()
    ref_loss = ref(**batch, num_items_in_batch=n_items).loss
    ref_loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in ref.named_parameters()}

    model = tiny_model()
    cp = ContextParallel(size=dist.get_world_size(), rank=dist.get_rank(), group=dist.group.WORLD, mode=mode)
    cp.attach(model)
    world = dist.get_world_size()
    # what the Trainer does: token count summed over all ranks (CP peers included), loss scaled by world size
    loss = model(**batch, num_items_in_batch=n_items * world).loss * world
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)
    worst = 0.0
    for n, p in model.named_parameters():
        g = p.grad.clone()
        dist.all_reduce(g)
        worst = max(worst, (g / world - ref_grads[n]).abs().max().item())
    results[f"step_{mode}"] = {"loss_ref": float(ref_loss), "loss_cp": float(total / world), "grad": worst}


def fsdp_reference(steps, batches):
    """Single-process AdamW on the full batches: losses and final weights."""
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for b in batches[:steps]:
        loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    return model, losses


def local_rows(batch):
    r, w = dist.get_rank(), dist.get_world_size()
    n = batch["input_ids"].shape[0] // w
    return {k: v[r * n:(r + 1) * n] for k, v in batch.items()}


def fsdp_step(model, opt, batch):
    loss = model(**local_rows(batch)).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    total = loss.detach().clone()
    dist.all_reduce(total)
    return float(total / dist.get_world_size())


def check_fsdp(results, ckpt_dir):
    """fully_shard on 2 ranks vs 1 process; DCP save at step 2, reload on 2 ranks, identical step 3."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    from mudpuppy.runtime.parallel.fsdp import is_sharded, shard_model

    # every row the same length and unmasked, so a per-rank mean equals the global mean
    batches = [{"input_ids": torch.randint(3, 128, (4, 24), generator=torch.Generator().manual_seed(s))}
               for s in range(3)]
    for b in batches:
        b["labels"] = b["input_ids"].clone()
    ref_model, ref_losses = fsdp_reference(3, batches)

    model = shard_model(tiny_model())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    results["fsdp_dtensor"] = is_sharded(model)
    losses = [fsdp_step(model, opt, b) for b in batches[:2]]
    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=ckpt_dir)
    full = {k: v.full_tensor() for k, v in model.state_dict().items()}
    if dist.get_rank() == 0:
        torch.save(full, os.path.join(os.path.dirname(ckpt_dir), "full_step2.pt"))
    losses.append(fsdp_step(model, opt, batches[2]))
    final = {k: v.full_tensor() for k, v in model.state_dict().items()}
    results["fsdp_losses"] = losses
    results["fsdp_ref_losses"] = ref_losses
    results["fsdp_weight_diff"] = max((final[k] - v).abs().max().item() for k, v in ref_model.state_dict().items())

    fresh = shard_model(tiny_model(seed=99))
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    msd, osd = get_state_dict(fresh, fresh_opt)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=ckpt_dir)
    set_state_dict(fresh, fresh_opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    results["fsdp_resumed_step3"] = fsdp_step(fresh, fresh_opt, batches[2])
    if dist.get_rank() == 0:
        torch.save(batches[2], os.path.join(os.path.dirname(ckpt_dir), "batch3.pt"))


def check_fsdp_with_cp(results):
    """FSDP2 sharded over the same 2 ranks that split the sequence (torchtitan's dp_shard x cp flattening)."""
    from mudpuppy.runtime.parallel.context_parallel import ContextParallel
    from mudpuppy.runtime.parallel.fsdp import is_sharded, shard_model

    batch = packed_batch(seed=21, width=32)
    n_items = (batch["labels"][:, 1:] != -100).sum()
    ref = tiny_model()
    ref_loss = ref(**batch, num_items_in_batch=n_items).loss
    ref_loss.backward()
    model = tiny_model()
    cp = ContextParallel(size=dist.get_world_size(), rank=dist.get_rank(), group=dist.group.WORLD)
    cp.attach(model)
    shard_model(model)
    world = dist.get_world_size()
    loss = model(**batch, num_items_in_batch=n_items * world).loss * world
    loss.backward()  # FSDP reduce-scatter averages over the 2 ranks
    total = loss.detach().clone()
    dist.all_reduce(total)
    worst = 0.0
    for (_name, p), (_, rp) in zip(model.named_parameters(), ref.named_parameters(), strict=False):
        worst = max(worst, (p.grad.full_tensor() - rp.grad).abs().max().item())
    results["fsdp_cp"] = {"dtensor": is_sharded(model), "loss_ref": float(ref_loss),
                          "loss": float(total / world), "grad": worst}


def main() -> int:
    from mudpuppy.runtime.parallel.context_parallel import ContextParallel, register_attention
    from mudpuppy.runtime.parallel.dist import finish, init_process_group

    init_process_group(timeout_s=60)
    results: dict = {}
    cp = ContextParallel(size=dist.get_world_size(), rank=dist.get_rank(), group=dist.group.WORLD)
    register_attention(cp)
    for mode, stride in (("allgather", None), ("allgather", 1), ("ulysses", None)):
        check_attention(cp, results, mode, stride)
    for mode in ("allgather", "ulysses"):
        check_training_step(results, mode)
    check_fsdp(results, os.environ["MP_CKPT"])
    check_fsdp_with_cp(results)
    if dist.get_rank() == 0:
        with open(os.environ["MP_RESULT"], "w") as fh:
            json.dump(results, fh, indent=1)
    finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
