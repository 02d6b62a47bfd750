"""Batches from tokenized rows, plain or packed, with padding that can never leak into the loss.

Plain rows (``input_ids``, ``attention_mask``, ``labels``) are right-padded to the longest row (or to
``sequence_len`` with ``pad_to_sequence_len``, rounded up to ``pad_to_multiple_of``).

Packed rows carry ``position_ids`` that restart at 0 for every sample. Such batches are sent *without* an
attention mask: transformers then derives a block-diagonal causal mask from the restarts (sdpa/eager/flex) or
varlen boundaries (flash-attention), so packed samples never attend to each other. The first label of every
sample is masked, because under the causal shift it would be predicted from the previous sample's last token;
that makes a packed batch's loss equal to the same samples' loss unpacked.

Flash-attention is different: transformers only reads sample boundaries from ``position_ids`` when the batch size
is 1 (``_is_packed_sequence``); a ``[B, W]`` packed batch with B > 1 would run plain causal attention over each
whole row, so later samples would attend to earlier ones. With ``flatten`` (set for flash attention) every
micro-batch becomes one ``[1, sum(L)]`` row, as transformers' ``DataCollatorWithFlattening`` does, and carries
``cu_seq_lens_q/k`` and ``max_length_q/k`` so the varlen kernel gets the boundaries without inferring them.

Every batch also carries ``num_real_tokens`` (non-pad tokens), which the trainer pops before the forward pass
and uses for tokens/s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100
REAL_TOKENS_KEY = "num_real_tokens"


@dataclass
class Collator:
    pad_token_id: int
    pad_to_length: int | None = None
    pad_to_multiple_of: int | None = None
    flatten: bool = False  # packed rows -> one [1, sum(L)] row with cu_seq_lens (flash-attention varlen)

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        packed = "position_ids" in rows[0]
        if packed and self.flatten:
            return self._flattened(rows)
        lengths = [len(r["input_ids"]) for r in rows]
        width = self._width(max(lengths))
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        if packed:
            position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        else:
            attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        real = 0
        for i, row in enumerate(rows):
            n = lengths[i]
            input_ids[i, :n] = torch.as_tensor(row["input_ids"], dtype=torch.long)
            row_labels = torch.as_tensor(row.get("labels", row["input_ids"]), dtype=torch.long)
            if packed:
                pos = torch.as_tensor(row["position_ids"], dtype=torch.long)
                position_ids[i, :n] = pos
                position_ids[i, n:] = torch.arange(width - n)  # padding is its own block
                row_labels = row_labels.masked_fill(pos == 0, IGNORE_INDEX)
                real += n
            else:
                mask = torch.as_tensor(row.get("attention_mask", [1] * n), dtype=torch.long)
                attention_mask[i, :n] = mask
                real += int(mask.sum())
            labels[i, :n] = row_labels
        batch: dict[str, Any] = {"input_ids": input_ids, "labels": labels}
        if packed:
            batch["position_ids"] = position_ids
        else:
            batch["attention_mask"] = attention_mask
        batch[REAL_TOKENS_KEY] = torch.tensor(real, dtype=torch.long)
        return batch

    def _flattened(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """One row holding every sample of the micro-batch back to back, plus the varlen boundaries."""
        import torch

        ids = [torch.as_tensor(r["input_ids"], dtype=torch.long) for r in rows]
        pos = [torch.as_tensor(r["position_ids"], dtype=torch.long) for r in rows]
        labels = [torch.as_tensor(r.get("labels", r["input_ids"]), dtype=torch.long).masked_fill(p == 0, IGNORE_INDEX)
                  for r, p in zip(rows, pos, strict=True)]
        real = sum(len(t) for t in ids)
        total = real
        if self.pad_to_length:  # same shape every step, as the unflattened batch would have
            total = max(total, self.pad_to_length * len(rows))
        if self.pad_to_multiple_of:
            total = -(-total // self.pad_to_multiple_of) * self.pad_to_multiple_of
        pad = total - real
        if pad:  # padding is its own segment: positions 0..pad-1, labels ignored
            ids.append(torch.full((pad,), self.pad_token_id, dtype=torch.long))
            pos.append(torch.arange(pad))
            labels.append(torch.full((pad,), IGNORE_INDEX, dtype=torch.long))
        position_ids = torch.cat(pos)
        starts = torch.nonzero(position_ids == 0).flatten()
        cu = torch.cat([starts, torch.tensor([total])]).to(torch.int32)
        longest = int((cu[1:] - cu[:-1]).max())
        return {
            "input_ids": torch.cat(ids).unsqueeze(0),
            "labels": torch.cat(labels).unsqueeze(0),
            "position_ids": position_ids.unsqueeze(0),
            "cu_seq_lens_q": cu, "cu_seq_lens_k": cu.clone(),
            "max_length_q": longest, "max_length_k": longest,
            REAL_TOKENS_KEY: torch.tensor(real, dtype=torch.long),
        }

    def _width(self, longest: int) -> int:
        width = max(longest, self.pad_to_length or 0)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return width


def build_collator(cfg: Any, tokenizer: Any, *, evaluation: bool = False) -> Collator:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    length = cfg.eval_sequence_len if evaluation and cfg.eval_sequence_len else cfg.sequence_len
    return Collator(
        pad_token_id=int(pad_id if pad_id is not None else 0),
        pad_to_length=length if cfg.pad_to_sequence_len else None,
        pad_to_multiple_of=cfg.pad_to_multiple_of,
        flatten=uses_flash_attention(cfg),
    )


def uses_flash_attention(cfg: Any) -> bool:
    """flash_attention_2/3/4 or a hub flash kernel: attention that finds packed boundaries only at batch size 1.

    Context parallelism replaces the attention with its own (segments from ``position_ids`` per row), so its
    batches stay ``[B, W]``.
    """
    from mudpuppy.runtime.parallel.context_parallel import context_parallel_size

    attn = cfg.attention_implementation() or ""
    return "flash" in attn.lower() and context_parallel_size(cfg) <= 1
