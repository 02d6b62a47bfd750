"""Issue 20.1: packed micro-batches under flash-attention keep samples apart for every micro_batch_size.

Independent references: transformers' own packed-sequence detection (``_is_packed_sequence``) and boundary
extraction (``prepare_fa_kwargs_from_position_ids``), and transformers' flash-attention forward run on CPU with
only the CUDA kernel swapped for SDPA (``tests.fixtures.flash_cpu``), compared with each sample run alone.
"""

from __future__ import annotations

import pytest
import torch
import yaml
from transformers.modeling_flash_attention_utils import _is_packed_sequence, prepare_fa_kwargs_from_position_ids

from mudpuppy.launcher.config import load_config_text
from mudpuppy.runtime.model import build_model
from mudpuppy.runtime.model.precision import Precision
from mudpuppy.runtime.train.collator import IGNORE_INDEX, REAL_TOKENS_KEY, Collator, build_collator
from tests.fixtures.flash_cpu import flash_attention_on_cpu
from tests.fixtures.tiny import EXAMPLES

pytestmark = pytest.mark.timeout(120)
CPU = Precision(mode="fp32", tf32=False, device="cpu")
SAMPLES = [[1, 40, 41, 42, 43], [1, 50, 51, 52], [1, 60, 61], [1, 70, 71, 72, 73, 74], [1, 80, 81], [1, 90]]


def cfg(**keys):
    doc = {"base_model": str(EXAMPLES / "tiny-llama"), "reinit_weights": True, "seed": 1, "learning_rate": 1e-3,
           "datasets": [{"path": "d.jsonl", "type": "alpaca"}], **keys}
    return load_config_text(yaml.safe_dump(doc)).config


def bins(batch_size: int) -> list[dict]:
    """``batch_size`` packed rows (two samples each where there are enough), as packing.pack_dataset writes them."""
    rows = []
    for i in range(batch_size):
        parts = [SAMPLES[(2 * i) % len(SAMPLES)], SAMPLES[(2 * i + 1) % len(SAMPLES)]]
        ids = [t for p in parts for t in p]
        rows.append({"input_ids": ids, "labels": ids, "attention_mask": [1] * len(ids),
                     "position_ids": [j for p in parts for j in range(len(p))],
                     "seq_lens": [len(p) for p in parts], "length": len(ids)})
    return rows


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4])
def test_flattened_batches_are_packed_for_transformers_at_every_batch_size(batch_size):
    for pad in (None, 16):
        batch = Collator(pad_token_id=0, pad_to_length=pad, flatten=True)(bins(batch_size))
        ids, pos = batch["input_ids"], batch["position_ids"]
        assert ids.shape[0] == 1 and pos.shape == ids.shape == batch["labels"].shape
        assert bool(_is_packed_sequence(pos, ids.shape[0]))
        (cu_q, cu_k), (max_q, _) = prepare_fa_kwargs_from_position_ids(pos)
        assert batch["cu_seq_lens_q"].tolist() == cu_q.tolist() == batch["cu_seq_lens_k"].tolist()
        assert batch["max_length_q"] == batch["max_length_k"] == int(max_q)
        assert batch["cu_seq_lens_q"].dtype == torch.int32
        assert int(batch[REAL_TOKENS_KEY]) == sum(r["length"] for r in bins(batch_size))
        if pad:
            assert ids.shape[1] == pad * batch_size
        # first token of every sample (and all padding) is never a target
        assert (batch["labels"][pos == 0] == IGNORE_INDEX).all()
    unflattened = Collator(pad_token_id=0)(bins(batch_size))
    # the fault: a [B, W] packed batch is packed to flash-attention only when B == 1
    assert bool(_is_packed_sequence(unflattened["position_ids"], batch_size)) == (batch_size == 1)


class _Tok:
    pad_token_id = 0
    eos_token_id = 2


def test_flash_attention_configs_flatten_train_and_eval_batches():
    assert build_collator(cfg(flash_attention=True), _Tok()).flatten
    assert build_collator(cfg(flash_attention=True), _Tok(), evaluation=True).flatten
    assert build_collator(cfg(attn_implementation="flash_attention_3"), _Tok()).flatten
    assert not build_collator(cfg(sdp_attention=True), _Tok()).flatten
    assert not build_collator(cfg(flash_attention=True, context_parallel_size=2), _Tok()).flatten  # CP: own attn
    assert not build_collator(cfg(), _Tok()).flatten


def _alone(model, sample):
    t = torch.tensor([sample])
    return model(input_ids=t, labels=t).logits[0]


def test_packed_logits_and_loss_equal_unpacked_under_transformers_flash_path():
    model, _ = build_model(cfg(), None, CPU)
    model.eval()
    rows = bins(3)
    samples = [SAMPLES[i % len(SAMPLES)] for i in range(6)]
    with torch.no_grad():
        reference = torch.cat([_alone(model, s) for s in samples])  # sdpa, each sample on its own
        flat = Collator(pad_token_id=0, pad_to_multiple_of=8, flatten=True)(rows)
        flat.pop(REAL_TOKENS_KEY)
        n = reference.shape[0]
        with flash_attention_on_cpu(model) as calls:
            out = model(**flat)
        assert calls and set(calls) == {"varlen"}
        assert torch.allclose(out.logits[0, :n], reference, atol=1e-5)
        # loss over the same targets as the samples run alone (first token of each sample predicts nothing)
        plain = Collator(pad_token_id=0)([{"input_ids": s, "labels": s} for s in samples])
        plain.pop(REAL_TOKENS_KEY)
        plain["labels"][:, 0] = IGNORE_INDEX
        assert torch.allclose(out.loss, model(**plain).loss, atol=1e-5)

        # without flattening transformers' flash path attends across samples of a row: the check can fail
        wide = Collator(pad_token_id=0)(rows)
        wide.pop(REAL_TOKENS_KEY)
        with flash_attention_on_cpu(model) as calls:
            leaked = model(**wide).logits
        assert "varlen" not in calls
        second = leaked[0, len(samples[0]): len(samples[0]) + len(samples[1])]
        assert not torch.allclose(second, _alone(model, samples[1]), atol=1e-3)
