"""Context parallelism: each (packed) sequence is split along its length over ``context_parallel_size`` ranks.

Every rank of a CP group sees the same batch (the data loader shards by data-parallel rank only) and keeps a
contiguous slice of the sequence: ``input_ids``, ``position_ids`` (taken from the full sequence, so RoPE and the
packed-sample restarts stay right) and the labels, which are shifted over the *whole* sequence before slicing so the
token at a slice boundary is still predicted from its left neighbour on the other rank. Attention is the only
operator that needs the other slices; two exchanges are offered, chosen by ``ring_attn_func`` (Axolotl's key):

* ``allgather`` (default; Llama-3-style "all-gather K/V"): every rank gathers K and V for the whole sequence and
  attends its own queries to them, ``heads_k_stride`` KV heads at a time to bound the gathered memory.
* ``ulysses`` (all-to-all): heads are exchanged for sequence, each rank runs ordinary attention over the full
  sequence for ``heads / cp`` heads, and a second all-to-all brings the output back.

Packed samples never attend to each other: the mask is causal in the global index *and* block-diagonal on the
segments that ``position_ids`` restarts delimit (padding is its own segment). The loss is a sum over this rank's
tokens divided by the data-parallel token count: the Trainer counts tokens on every rank, and CP peers hold the same
batch, so that count is divided by the CP size here; gradients averaged over the world then equal the
single-process loss's.

Collectives go through ``torch.distributed._functional_collectives`` autograd variants: the
``torch.distributed.nn`` all-gather returns wrong gradients on gloo for non-contiguous incoming gradients, which
CPU attention's backward produces. torch's own ``context_parallel`` (ring attention over SDPA) is CUDA-only for
causal attention in torch 2.13; this implementation runs on gloo and NCCL alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from mudpuppy.launcher.errors import UserError

log = logging.getLogger("mudpuppy.runtime.parallel")

ATTN_NAME = "mudpuppy_cp"
MODES = ("allgather", "ulysses")
IGNORE_INDEX = -100
# Axolotl's ring-flash-attn names -> our exchange
AXOLOTL_RING_FUNCS = {"varlen_llama3": "allgather", "batch_ring": "allgather", "batch_zigzag": "allgather",
                      "batch_stripe": "allgather"}


def context_parallel_size(cfg: Any) -> int:
    return int(cfg.context_parallel_size or cfg.sequence_parallel_degree or 1)


def cp_mode(cfg: Any) -> str:
    raw = cfg.ring_attn_func
    if raw is None:
        return "allgather"
    name = AXOLOTL_RING_FUNCS.get(str(raw), str(raw))
    if name not in MODES:
        raise UserError(f"ring_attn_func: {raw!r} is not supported",
                        hint="use allgather (default), ulysses, or Axolotl's varlen_llama3")
    return name


def check_cp_config(cfg: Any, world_size: int) -> int:
    size = context_parallel_size(cfg)
    if size <= 1:
        return 1
    if world_size % size:
        raise UserError(f"context_parallel_size: {size} does not divide the world size {world_size}",
                        hint="launch a multiple of context_parallel_size processes")
    if cfg.deepspeed:
        raise UserError("context_parallel_size with deepspeed is not supported; use fsdp or plain DDP")
    return size


@dataclass
class ContextParallel:
    """One process's view of its CP group, plus the segments of the batch now in flight."""

    size: int
    rank: int
    group: Any
    mode: str = "allgather"
    heads_k_stride: int | None = None
    segments: Any = None  # [B, W] segment id per global position of the current batch
    offset: int = 0  # global index of this rank's first token
    inner_impl: str = "sdpa"
    _hooks: list[Any] = field(default_factory=list)

    # ------------------------------------------------------------ batch
    def shard_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Slice a full batch (identical on every CP rank) to this rank's part of the sequence."""
        import torch

        input_ids = inputs["input_ids"]
        batch, width = input_ids.shape
        padded = -(-width // self.size) * self.size
        position_ids = inputs.get("position_ids")
        if position_ids is None:
            position_ids = torch.arange(width, device=input_ids.device).expand(batch, width)
            segments = torch.zeros((batch, width), dtype=torch.long, device=input_ids.device)
        else:
            segments = torch.cumsum((position_ids == 0).long(), dim=1)
        labels = inputs.get("labels")
        shift_labels = inputs.get("shift_labels")
        if shift_labels is None and labels is not None:
            shift_labels = torch.cat(
                [labels[:, 1:], torch.full((batch, 1), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)], 1)
        if padded != width:
            extra = padded - width
            pad_pos = torch.arange(extra, device=input_ids.device).expand(batch, extra)
            input_ids = torch.cat([input_ids, input_ids.new_zeros((batch, extra))], 1)
            position_ids = torch.cat([position_ids, pad_pos], 1)
            segments = torch.cat([segments, segments.new_full((batch, extra), -1)], 1)
            if shift_labels is not None:
                shift_labels = torch.cat([shift_labels, shift_labels.new_full((batch, extra), IGNORE_INDEX)], 1)
        chunk = padded // self.size
        start = self.rank * chunk
        self.segments, self.offset = segments, start
        out = {k: v for k, v in inputs.items()
               if k not in ("input_ids", "position_ids", "labels", "shift_labels", "attention_mask")}
        out["input_ids"] = input_ids[:, start:start + chunk]
        out["position_ids"] = position_ids[:, start:start + chunk]
        if shift_labels is not None:
            local = shift_labels[:, start:start + chunk].contiguous()
            out["labels"] = local  # non-None so the model computes a loss; shift_labels makes it skip its shift
            out["shift_labels"] = local
        if "num_items_in_batch" in out and out["num_items_in_batch"] is not None:
            out["num_items_in_batch"] = out["num_items_in_batch"] / self.size
        return out

    def local_mask(self, q_len: int, device: Any) -> Any:
        """[B, 1, q_len, W] bool: causal in the global index and inside one packed sample."""
        import torch

        seg = self.segments.to(device)
        width = seg.shape[1]
        q_idx = torch.arange(self.offset, self.offset + q_len, device=device)
        k_idx = torch.arange(width, device=device)
        causal = q_idx[:, None] >= k_idx[None, :]
        same = seg[:, self.offset:self.offset + q_len, None] == seg[:, None, :]
        return (causal[None] & same)[:, None]

    # ------------------------------------------------------------ attention
    def attention(self, module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                  scaling: float | None = None, dropout: float = 0.0, **kwargs: Any) -> tuple[Any, None]:
        """transformers attention signature: q [B,H,Lq,D], k/v [B,Hkv,Lq,D] -> ([B,Lq,H,D], None)."""
        if self.segments is None:
            raise RuntimeError("context-parallel attention called without a sharded batch")
        if module.training and dropout:
            raise UserError("attention dropout is not supported with context parallelism; set it to 0")
        if self.mode == "ulysses":
            out = self._ulysses(query, key, value, scaling)
        else:
            out = self._allgather(query, key, value, scaling)
        return out.transpose(1, 2).contiguous(), None

    def _allgather(self, query: Any, key: Any, value: Any, scaling: float | None) -> Any:
        import torch
        import torch.nn.functional as F
        from torch.distributed._functional_collectives import all_gather_tensor_autograd

        heads, kv_heads = query.shape[1], key.shape[1]
        rep = heads // kv_heads
        stride = min(self.heads_k_stride or kv_heads, kv_heads)
        mask = self.local_mask(query.shape[2], query.device)
        outs = []
        for first in range(0, kv_heads, stride):
            last = min(first + stride, kv_heads)
            k = all_gather_tensor_autograd(key[:, first:last].contiguous(), gather_dim=2, group=self.group)
            v = all_gather_tensor_autograd(value[:, first:last].contiguous(), gather_dim=2, group=self.group)
            q = query[:, first * rep:last * rep]
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            outs.append(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling))
        return torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]

    def _ulysses(self, query: Any, key: Any, value: Any, scaling: float | None) -> Any:
        import torch.nn.functional as F

        heads, kv_heads = query.shape[1], key.shape[1]
        if heads % self.size:
            raise UserError(f"ring_attn_func: ulysses needs attention heads ({heads}) divisible by "
                            f"context_parallel_size ({self.size})", hint="use the default allgather exchange")
        if kv_heads % self.size:
            rep = heads // kv_heads
            key, value = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)
            kv_heads = heads
        q = self._seq_to_heads(query)
        k = self._seq_to_heads(key)
        v = self._seq_to_heads(value)
        rep = q.shape[1] // k.shape[1]
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        saved = self.offset
        self.offset = 0
        try:
            mask = self.local_mask(q.shape[2], q.device)
        finally:
            self.offset = saved
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling)
        return self._heads_to_seq(out)

    def _seq_to_heads(self, x: Any) -> Any:
        """[B, H, L/N, D] on each rank -> [B, H/N, L, D] (this rank's heads, every rank's positions)."""
        from torch.distributed._functional_collectives import all_to_all_single_autograd

        b, h, n_local, d = x.shape
        parts = x.reshape(b, self.size, h // self.size, n_local, d).permute(1, 0, 2, 3, 4).contiguous()
        # [N (source rank = sequence chunk), B, h/N, L/N, D]
        got = all_to_all_single_autograd(parts, None, None, group=self.group)
        return got.permute(1, 2, 0, 3, 4).reshape(b, h // self.size, self.size * n_local, d)

    def _heads_to_seq(self, x: Any) -> Any:
        """Inverse of ``_seq_to_heads``: [B, H/N, L, D] -> [B, H, L/N, D]."""
        from torch.distributed._functional_collectives import all_to_all_single_autograd

        b, h_local, length, d = x.shape
        n_local = length // self.size
        parts = x.reshape(b, h_local, self.size, n_local, d).permute(2, 0, 1, 3, 4).contiguous()
        # [N (source rank = head group), B, h/N, L/N, D]
        got = all_to_all_single_autograd(parts, None, None, group=self.group)
        return got.permute(1, 0, 2, 3, 4).reshape(b, self.size * h_local, n_local, d)

    # ------------------------------------------------------------ model
    def attach(self, model: Any) -> Any:
        """Route the model's attention through this group and shard every forward's inputs on the way in."""
        register_attention(self)
        config = model.config
        config.use_cache = False  # a KV cache would hold this rank's slice only
        self.inner_impl = getattr(config, "_attn_implementation", None) or "sdpa"
        if self.inner_impl.startswith("flash"):
            log.warning("context parallelism computes attention with SDPA masks; %s is not used", self.inner_impl)
        _set_attn_impl(model, ATTN_NAME)

        def pre_hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
            if args:
                raise RuntimeError("context parallelism needs keyword inputs (model(input_ids=..., ...))")
            return args, self.shard_inputs(kwargs)

        self._hooks.append(model.register_forward_pre_hook(pre_hook, with_kwargs=True))
        return model


_ACTIVE: list[ContextParallel] = []


def register_attention(cp: ContextParallel) -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    _ACTIVE[:] = [cp]

    def attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> Any:
        return _ACTIVE[0].attention(module, query, key, value, attention_mask, **kwargs)

    def no_mask(*_args: Any, **_kwargs: Any) -> None:
        return None  # the CP attention builds its own (global, packed-aware) mask

    AttentionInterface.register(ATTN_NAME, attention)
    AttentionMaskInterface.register(ATTN_NAME, no_mask)


def _set_attn_impl(model: Any, name: str) -> None:
    try:
        model.set_attn_implementation(name)
    except (ValueError, AttributeError, TypeError):
        for module in model.modules():
            config = getattr(module, "config", None)
            if config is not None and hasattr(config, "_attn_implementation"):
                config._attn_implementation = name


def build_context_parallel(size: int, *, mode: str = "allgather", heads_k_stride: int | None = None) -> tuple[
        ContextParallel, Any]:
    """The CP group of this rank on a (dp, cp) device mesh; CP is the inner (same-node) dimension."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    world = dist.get_world_size()
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    mesh = init_device_mesh(device, (world // size, size), mesh_dim_names=("dp_shard", "cp"))
    group = mesh["cp"].get_group()
    cp = ContextParallel(size=size, rank=dist.get_rank(group), group=group, mode=mode, heads_k_stride=heads_k_stride)
    return cp, mesh
