"""Plug ``linear_cross_entropy`` into an HF ``*ForCausalLM`` so training never builds the logits tensor.

The model's own forward is wrapped on the instance (no library source is touched): when labels are passed, the
decoder runs as usual, and the loss is computed from its last hidden states and the LM head's weight with HF's
exact causal-LM conventions (labels shifted left with a trailing ignore index, or ``shift_labels`` as given; sum
divided by ``num_items_in_batch`` when the Trainer passes it for gradient accumulation, else mean over real tokens).
Without labels (generation, logits-based eval) the original forward runs untouched. ``functools.wraps`` keeps
the signature, so the Trainer still sees that the model accepts loss kwargs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mudpuppy.kernels.linear_ce import IGNORE_INDEX, linear_cross_entropy
from mudpuppy.launcher.errors import UserError

_MARK = "_mudpuppy_fused_ce"
# Forward kwargs that belong to the loss, not to the decoder.
_LOSS_KWARGS = ("labels", "shift_labels", "num_items_in_batch", "ignore_index", "logits_to_keep")


def _scale_attr(config: Any) -> str | None:
    for name in ("logit_scale", "logits_scaling", "output_multiplier_scale"):
        value = getattr(config, name, None)
        if value not in (None, 1, 1.0):
            return name
    return None


def install_fused_loss(model: Any, *, label_smoothing: float = 0.0, chunk_tokens: int | None = None,
                       num_chunks: int | None = None) -> str:
    """Wrap ``model.forward`` (a ``*ForCausalLM``); returns a one-line description. Idempotent.

    ``num_chunks`` (Axolotl's ``chunked_cross_entropy_num_chunks``) splits each batch's tokens into that many
    chunks instead of a fixed ``chunk_tokens``.
    """
    if getattr(model, _MARK, False):
        return f"fused linear cross-entropy already on {type(model).__name__}"
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if not isinstance(head, nn.Linear) or decoder is None or decoder is model:
        raise UserError(
            f"cut_cross_entropy / liger fused linear cross-entropy: {type(model).__name__} is not a causal LM with "
            "a linear LM head", hint="set cut_cross_entropy: false (and the liger_*cross_entropy keys)")
    config = getattr(model, "config", None)
    scale = _scale_attr(config)
    if scale:
        raise UserError(f"fused linear cross-entropy does not support {type(model).__name__}'s {scale}",
                        hint="set cut_cross_entropy: false for this model")
    softcap = getattr(config, "final_logit_softcapping", None)
    original = model.forward
    out_fields = None

    @functools.wraps(original)
    def forward(*args: Any, **kwargs: Any) -> Any:
        nonlocal out_fields
        if args or (kwargs.get("labels") is None and kwargs.get("shift_labels") is None):
            return original(*args, **kwargs)
        labels, shift_labels = kwargs.pop("labels", None), kwargs.pop("shift_labels", None)
        num_items = kwargs.pop("num_items_in_batch", None)
        ignore_index = kwargs.pop("ignore_index", IGNORE_INDEX)
        kwargs.pop("logits_to_keep", None)
        out = decoder(**kwargs)
        hidden = out[0]
        if shift_labels is None:
            shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
        chunk = chunk_tokens
        if num_chunks:
            chunk = max(1, -(-hidden.shape[:-1].numel() // num_chunks))
        loss = linear_cross_entropy(
            hidden, head.weight, shift_labels, bias=head.bias, ignore_index=ignore_index,
            label_smoothing=label_smoothing, softcap=softcap, num_items_in_batch=num_items,
            chunk_tokens=chunk)
        from transformers.modeling_outputs import CausalLMOutputWithPast

        if out_fields is None:
            out_fields = {f.name for f in dataclasses.fields(CausalLMOutputWithPast)}
        items = out.items() if hasattr(out, "items") else ()
        extra = {k: v for k, v in items if k in out_fields and k not in ("loss", "logits")}
        return CausalLMOutputWithPast(loss=loss, logits=None, **extra)

    model.forward = forward
    setattr(model, _MARK, True)
    detail = f", logit softcap {softcap}" if softcap else ""
    size = f"1/{num_chunks} of the batch" if num_chunks else f"{chunk_tokens or 'auto'} tokens"
    return (f"kernel fused_linear_cross_entropy: {type(model).__name__} loss computed from hidden states in chunks "
            f"of {size}, logits never materialised in training{detail}")


def causal_lm_reference_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: Any = None,
                             ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """HF's ForCausalLMLoss, restated: shift, fp32, sum/num_items or mean."""
    shift = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    reduction = "mean" if num_items_in_batch is None else "sum"
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), shift.reshape(-1),
                           ignore_index=ignore_index, reduction=reduction)
    return loss if num_items_in_batch is None else loss / num_items_in_batch
