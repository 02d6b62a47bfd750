"""Sample packing: tokenized rows -> bins of at most ``sequence_len`` tokens, first-fit-decreasing per group.

Packed row format (what ``prepare_datasets`` returns for train when ``sample_packing: true``, and for eval when
``eval_sample_packing`` is on, which it is by default with packing)::

    {
      "input_ids":      [a0 a1 a2 b0 b1 c0 ...],   # samples concatenated, never split, never padded here
      "labels":         [..]                       # concatenated labels (-100 where masked)
      "attention_mask": [1 1 1 1 1 1 ...],        # all ones (no padding inside a bin)
      "position_ids":   [0 1 2 0 1 0 ...],        # restart at 0 at every sample boundary
      "seq_lens":       [3, 2, 1, ...],            # lengths of the samples in this bin, in order
      "length":         6,                         # sum(seq_lens) <= sequence_len
    }

How to collate: concatenate the rows of a micro-batch along the sequence (batch size 1 of total length) or pad
each row to ``sequence_len`` when ``pad_to_sequence_len`` (input_ids with pad_token_id, labels with -100,
position_ids with 0..k continuing so pads form their own segment, attention_mask 0). Attention must stay inside
each sample: with flash-attention varlen use ``cu_seqlens = cumsum([0, *seq_lens])`` (position_ids restarting at 0
give the same boundaries); with SDPA/eager build a block-diagonal causal mask from ``seq_lens``.

The algorithm: rows are taken in groups of ``sample_packing_group_size`` (in dataset order), each group sorted
by length descending and placed into the first open bin with room, bins holding at most
``sample_packing_bin_size`` samples. Every row lands in exactly one bin (rows longer than ``sequence_len`` were
dropped or truncated earlier). ``sample_packing_sequentially`` keeps dataset order instead, as Axolotl's
sequential allocator does: each row goes into the current bin if it fits, else opens the next one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mudpuppy.runtime.data.arrow_rows import dataset_from, table_of


def pack_lengths(lengths: np.ndarray | list[int], capacity: int, group_size: int = 100_000,
                 bin_size: int = 200, sequential: bool = False) -> list[list[int]]:
    """Row indices per bin. First-fit decreasing within each group of ``group_size`` rows (or in order)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if (lengths > capacity).any():
        raise ValueError(f"a row is longer than the bin capacity {capacity}")
    if sequential:
        return _pack_in_order(lengths, capacity)
    bins: list[list[int]] = []
    group_size = max(1, group_size)
    bin_size = max(1, bin_size)
    for offset in range(0, len(lengths), group_size):
        bins.extend(_first_fit_decreasing(lengths[offset: offset + group_size], capacity, bin_size, offset))
    return bins


def _first_fit_decreasing(group: np.ndarray, capacity: int, bin_size: int, offset: int) -> list[list[int]]:
    """First-fit decreasing, one equal-length run at a time instead of one row at a time.

    Rows of equal length placed one after another fill the open bins in bin order: a bin that cannot take the
    next one could not take the one before either, so bin j takes ``min(room_j // size, bin_size - count_j)`` of
    them before the run moves on, and what is left opens new bins that each take as many as fit. That is what
    placing the run row by row gives; the loop runs once per distinct length (at most ``capacity``), not per row.
    """
    order = np.argsort(-group, kind="stable")
    sizes = group[order]
    n = len(order)
    room = np.empty(n, dtype=np.int64)
    count = np.zeros(n, dtype=np.int64)
    bin_of = np.empty(n, dtype=np.int64)
    opened = 0
    starts = np.flatnonzero(np.concatenate([[True], sizes[1:] != sizes[:-1]])) if n else np.array([], np.int64)
    for first, stop in zip(starts.tolist(), [*starts[1:].tolist(), n], strict=True):
        size = int(sizes[first])
        k = stop - first
        free = bin_size - count[:opened]
        take = np.minimum(room[:opened] // size, free) if size else free.copy()
        take[(room[:opened] < size) | (free <= 0)] = 0
        cum = np.cumsum(take)
        placed = min(k, int(cum[-1])) if opened else 0
        if placed:
            target = np.searchsorted(cum, np.arange(placed), side="right")
            bin_of[first: first + placed] = target
            added = np.bincount(target, minlength=opened)
            room[:opened] -= added * size
            count[:opened] += added
        rest = k - placed
        if rest:
            per_bin = min(capacity // size, bin_size) if size else bin_size
            new_bins = -(-rest // per_bin)
            bin_of[first + placed: stop] = opened + np.arange(rest) // per_bin
            filled = np.full(new_bins, per_bin, dtype=np.int64)
            filled[-1] = rest - per_bin * (new_bins - 1)
            room[opened: opened + new_bins] = capacity - filled * size
            count[opened: opened + new_bins] = filled
            opened += new_bins
    by_bin = np.argsort(bin_of, kind="stable")
    members = (order[by_bin] + offset).tolist()
    cuts = np.cumsum(count[:opened])[:-1].tolist()
    return [members[a:b] for a, b in zip([0, *cuts], [*cuts, n], strict=True)] if opened else []


def _pack_in_order(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    bins: list[list[int]] = []
    room = 0
    for index, size in enumerate(lengths.tolist()):
        if not bins or size > room:
            bins.append([])
            room = capacity
        bins[-1].append(index)
        room -= size
    return bins


def pack_dataset(rows: Any, capacity: int, group_size: int = 100_000, bin_size: int = 200,
                 sequential: bool = False) -> tuple[Any, float]:
    """Packed ``datasets.Dataset`` (format above) and its efficiency: real tokens / (bins * capacity).

    Built with Arrow take/flatten on the token columns, so packing 100k rows costs no per-token Python.
    """
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    table = table_of(rows, ["input_ids", "labels"])
    lengths = pc.list_value_length(table.column("input_ids")).to_numpy(zero_copy_only=False).astype(np.int64)
    if not len(lengths):
        return datasets.Dataset.from_dict({k: [] for k in PACKED_COLUMNS}), 0.0
    bins = pack_lengths(lengths, capacity, group_size, bin_size, sequential=sequential)
    order = np.fromiter((i for b in bins for i in b), dtype=np.int64, count=len(lengths))
    per_bin = np.array([len(b) for b in bins], dtype=np.int64)
    ordered_lengths = lengths[order]
    bin_tokens = np.add.reduceat(ordered_lengths, np.concatenate([[0], np.cumsum(per_bin)[:-1]]))
    token_offsets = pa.array(np.concatenate([[0], np.cumsum(bin_tokens)]).astype(np.int32))
    member_offsets = pa.array(np.concatenate([[0], np.cumsum(per_bin)]).astype(np.int32))
    take = pa.array(order)

    def packed(column: str) -> Any:
        flat = pc.list_flatten(table.column(column).combine_chunks().take(take))
        return pa.ListArray.from_arrays(token_offsets, flat)

    starts = np.repeat(np.cumsum(ordered_lengths) - ordered_lengths, ordered_lengths)
    positions = (np.arange(int(ordered_lengths.sum()), dtype=np.int64) - starts).astype(np.int32)
    out = pa.table({
        "input_ids": packed("input_ids"),
        "labels": packed("labels"),
        "attention_mask": pa.ListArray.from_arrays(token_offsets, pa.array(np.ones(len(positions), np.int8))),
        "position_ids": pa.ListArray.from_arrays(token_offsets, pa.array(positions)),
        "seq_lens": pa.ListArray.from_arrays(member_offsets, pa.array(ordered_lengths.astype(np.int32))),
        "length": pa.array(bin_tokens.astype(np.int32)),
    })
    efficiency = float(lengths.sum()) / (len(bins) * capacity)
    return dataset_from(out, rows, f"pack_dataset:{capacity}:{group_size}:{bin_size}:{sequential}"), efficiency


PACKED_COLUMNS = ("input_ids", "labels", "attention_mask", "position_ids", "seq_lens", "length")
