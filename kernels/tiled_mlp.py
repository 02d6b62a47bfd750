"""Tiled MLP: run a token-wise MLP over sequence tiles and recompute each tile in backward.

An MLP's activations are [tokens x intermediate] (3-5x the hidden size, several of them). For long sequences
they dominate activation memory even under gradient checkpointing, because a checkpointed layer's recompute
still materialises the whole sequence's MLP activations at once. Here forward keeps only the MLP input; backward
recomputes one tile at a time and takes gradients for the input and the trainable parameters tile by tile, so
at most one tile's activations exist at any moment. Gradients flow back as ordinary Function outputs (no hidden
``.grad`` accumulation), so DDP/FSDP hooks and gradient checkpointing around it behave as usual.
The reference is the MLP called on the whole sequence.

Backward runs on the autograd engine's thread, where no autocast is active: the recompute would run in fp32, a
different function from the bf16 forward, at twice the memory per tile. Forward therefore records the autocast
state of its device and backward recomputes under the same one (what ``torch.amp.custom_fwd``/``custom_bwd`` do,
by hand because those decorators are bound to one device type and this runs on CPU and CUDA alike).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch


def auto_num_shards(seq_len: int, hidden_size: int) -> int:
    """One tile per ``hidden_size`` tokens: below that the MLP's activations are no bigger than its weights."""
    return max(1, math.ceil(seq_len / max(1, hidden_size)))


class TiledMLPFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fn, num_shards, x, *params):
        ctx.fn, ctx.num_shards = fn, num_shards
        ctx.autocast = _autocast_state(x.device.type)
        ctx.save_for_backward(x, *params)
        out = None
        start = 0
        with torch.no_grad():
            for tile in _tiles(x, num_shards):
                y = fn(tile)
                if out is None:
                    out = y.new_empty(*x.shape[:-2], x.shape[-2], y.shape[-1])
                out.narrow(-2, start, tile.shape[-2]).copy_(y)
                start += tile.shape[-2]
        return out

    @staticmethod
    def backward(ctx, dout):
        x, *params = ctx.saved_tensors
        need_x = ctx.needs_input_grad[2]
        want = [p for p, need in zip(params, ctx.needs_input_grad[3:], strict=True) if need]
        dx = torch.zeros_like(x) if need_x else None
        dparams: list[torch.Tensor | None] = [None] * len(want)
        start = 0
        for tile, dtile in zip(_tiles(x, ctx.num_shards), _tiles(dout, ctx.num_shards), strict=True):
            length = tile.shape[-2]
            with torch.enable_grad(), torch.autocast(**ctx.autocast):
                t = tile.detach().requires_grad_(need_x)
                out = ctx.fn(t)
            inputs = ([t] if need_x else []) + want
            if inputs and out.requires_grad:
                grads = torch.autograd.grad(out, inputs, dtile, allow_unused=True)
                if need_x:
                    assert dx is not None
                    if grads[0] is not None:
                        dx.narrow(-2, start, length).copy_(grads[0])
                    grads = grads[1:]
                for i, g in enumerate(grads):
                    prev = dparams[i]
                    if g is not None:
                        dparams[i] = g if prev is None else prev.add_(g)
            start += length
        it = iter(dparams)
        pgrads = [next(it) if need else None for need in ctx.needs_input_grad[3:]]
        return (None, None, dx, *pgrads)


def _autocast_state(device: str) -> dict[str, Any]:
    enabled = torch.is_autocast_enabled(device)
    state: dict[str, Any] = {"device_type": device, "enabled": enabled}
    if enabled:
        state["dtype"] = torch.get_autocast_dtype(device)
        state["cache_enabled"] = torch.is_autocast_cache_enabled()
    return state


def _tiles(t: torch.Tensor, num_shards: int) -> tuple[torch.Tensor, ...]:
    return torch.tensor_split(t, min(num_shards, t.shape[-2]), dim=-2) if t.dim() >= 2 else (t,)


def tiled_mlp(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, num_shards: int,
              params: Sequence[torch.Tensor]) -> torch.Tensor:
    """``fn(x)`` computed tile by tile over the sequence dim (-2); ``params`` are fn's trainable tensors."""
    if num_shards <= 1 or x.dim() < 2 or x.shape[-2] < 2:
        return fn(x)
    return TiledMLPFunction.apply(fn, num_shards, x, *params)


def tiled_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Bound onto an MLP module: tiles its (possibly already fused) forward over the sequence."""
    inner = self._mudpuppy_tiled_inner
    if args or kwargs or not torch.is_grad_enabled():
        return inner(x, *args, **kwargs)
    shards = self._mudpuppy_tiled_shards or auto_num_shards(x.shape[-2], x.shape[-1])
    params = [p for p in self.parameters() if p.requires_grad]
    return tiled_mlp(inner, x, shards, params)
