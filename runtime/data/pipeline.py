"""From ``datasets:`` entries to tokenized train/eval rows, in Axolotl's order so row order matches too:

per entry: load -> split -> ``shards`` (seeded shuffle + shard) -> tokenize (or pass pre-tokenized through);
then merge (+ seeded shuffle unless ``shuffle_merged_datasets: false``) -> excess length (drop / truncate /
raise, with ``min_sample_len``) -> with packing: drop rows with nothing to train and add position_ids ->
exact dedup -> cache; then ``dataset_shard_num/idx`` -> ``val_set_size`` split (seeded, unshuffled tail).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.data import cache
from mudpuppy.runtime.data.arrow_rows import dataset_from, list_lengths, table_of
from mudpuppy.runtime.data.loading import load_raw
from mudpuppy.runtime.data.rows import IGNORE_INDEX, RowError
from mudpuppy.runtime.data.strategies import build_strategy

TOKEN_COLUMNS = ("input_ids", "attention_mask", "labels")
MULTIPROC_MIN_ROWS = 20_000


@dataclass
class Stats:
    rows_in: int = 0
    rows_tokenized: int = 0
    skipped_invalid: int = 0
    dropped_long: int = 0
    dropped_short: int = 0
    truncated: int = 0
    dropped_untrainable: int = 0
    deduplicated: int = 0
    train_rows: int = 0
    eval_rows: int = 0
    train_tokens: int = 0
    trainable_tokens: int = 0
    packing_efficiency: float | None = None
    packed_bins: int | None = None
    seconds: float = 0.0
    from_cache: bool = False
    cache_dir: str | None = None
    per_dataset: list[dict[str, Any]] = field(default_factory=list)


def seed_of(cfg: Any) -> int:
    return 42 if cfg.seed is None else int(cfg.seed)


def num_proc(cfg: Any, rows: int) -> int | None:
    asked = cfg.dataset_num_proc or cfg.dataset_processes
    if asked:
        return int(asked) if asked > 1 else None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores if cores > 1 and rows >= MULTIPROC_MIN_ROWS else None


def _is_pretokenized(dataset: Any) -> bool:
    return all(c in dataset.column_names for c in TOKEN_COLUMNS)


def _entries(configs: list[Any]) -> list[Any]:
    out: list[Any] = []
    for ds in configs:
        if ds.preprocess_shards and not ds.shards:
            out.extend(ds.model_copy(update={"shards": ds.preprocess_shards, "shards_idx": i})
                       for i in range(ds.preprocess_shards))
        else:
            out.append(ds)
    return out


def tokenize_entry(cfg: Any, ds: Any, tokenizer: Any, split: str, stats: Stats) -> Any:
    skip = bool(cfg.skip_invalid_rows)
    raw, skipped_lines = load_raw(ds, split, skip_invalid=skip)
    stats.skipped_invalid += skipped_lines
    if ds.shards:
        raw = raw.shuffle(seed=seed_of(cfg)).shard(num_shards=ds.shards, index=ds.shards_idx or 0)
    stats.rows_in += len(raw) + skipped_lines
    if _is_pretokenized(raw):
        validate_pretokenized(raw, ds.path)
        stats.per_dataset.append({"path": ds.path, "type": "pre-tokenized", "rows": len(raw)})
        return raw
    if ds.type is None:
        raise UserError(f"datasets: {ds.path}: no `type:` and no input_ids/attention_mask/labels columns",
                        hint="set type (alpaca, chat_template, completion, ...) or give pre-tokenized rows")
    strategy = build_strategy(cfg, ds, tokenizer)
    source = ds.path
    if strategy.name == "stepwise_supervised" and "labels" in raw.column_names:
        import datasets

        # the source's true/false step labels column would otherwise type the output labels as bool
        raw = raw.cast_column("labels", datasets.Sequence(datasets.Value("int64")))
    columns = raw.column_names

    def run(batch: dict[str, list[Any]], indices: list[int]) -> Any:
        keys = list(batch)
        rows = [dict(zip(keys, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        out: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": []}
        bad: list[bool] = []
        for index, result in zip(indices, strategy.tokenize_rows(rows), strict=True):
            if isinstance(result, RowError):
                if not skip:
                    raise UserError(f"{source}: row {index}: {result}",
                                    hint="fix the row or set skip_invalid_rows: true")
                for k in TOKEN_COLUMNS:
                    out[k].append([])
                bad.append(True)
                continue
            for piece in result:
                for k in TOKEN_COLUMNS:
                    out[k].append(piece[k])
                bad.append(False)
        return token_table(out, bad)

    procs = num_proc(cfg, len(raw))
    tokenized = raw.map(run, batched=True, batch_size=1000, with_indices=True, remove_columns=columns,
                        num_proc=procs, desc=f"Tokenizing {os.path.basename(source)}", load_from_cache_file=False)
    flags = table_of(tokenized, ["_bad"]).column("_bad") if len(tokenized) else None
    bad = int(flags.to_numpy(zero_copy_only=False).sum()) if flags is not None else 0
    if bad:
        tokenized = tokenized.filter(lambda b: [not x for x in b], input_columns="_bad", batched=True)
    stats.skipped_invalid += bad
    stats.per_dataset.append({"path": source, "type": getattr(strategy, "name", str(ds.type)),
                              "rows": len(raw), "skipped": bad + skipped_lines})
    return tokenized.remove_columns("_bad")


def token_table(columns: dict[str, list[list[int]]], bad: list[bool]) -> Any:
    """The batch's token columns as an Arrow table (list<int64>, what datasets infers from these lists), built
    from one flat int64 array and offsets per column: half the cost of datasets' per-value conversion."""
    import pyarrow as pa

    arrays = {}
    for name, rows in columns.items():
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(offsets[-1]))
        arrays[name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))
    arrays["_bad"] = pa.array(bad, type=pa.bool_())
    return pa.table(arrays)


def validate_pretokenized(dataset: Any, path: str) -> None:
    sample = dataset.select(range(min(len(dataset), 1000)))
    for index, (ids, mask, labels) in enumerate(zip(sample["input_ids"], sample["attention_mask"],
                                                    sample["labels"], strict=True)):
        if not (len(ids) == len(mask) == len(labels)):
            raise UserError(f"{path}: row {index}: input_ids/attention_mask/labels lengths differ "
                            f"({len(ids)}/{len(mask)}/{len(labels)})")


def merge(parts: list[Any], cfg: Any, columns: tuple[str, ...] | None = TOKEN_COLUMNS) -> Any:
    """Concatenate the datasets' rows (keeping ``columns``; None keeps all) and shuffle as Axolotl does."""
    import datasets

    seed = seed_of(cfg)
    shuffle = cfg.shuffle_merged_datasets is not False
    if len(parts) == 1:
        return parts[0].shuffle(seed=seed) if shuffle else parts[0]
    if cfg.shuffle_before_merging_datasets:
        parts = [p.shuffle(seed=seed) for p in parts]
    if columns is not None:
        parts = [p.select_columns(list(columns)) for p in parts]
    try:
        merged = datasets.concatenate_datasets(parts)
    except ValueError as exc:
        raise UserError(f"datasets: the entries' rows have different columns and cannot be merged: "
                        f"{str(exc).splitlines()[0]}") from None
    return merged.shuffle(seed=seed) if shuffle else merged


def lengths_of(dataset: Any) -> Any:
    """Token counts per row straight from Arrow (honours shuffle/select index mappings)."""
    return list_lengths(dataset, "input_ids")


def handle_length(dataset: Any, max_len: int, cfg: Any, stats: Stats) -> Any:
    strategy = (cfg.excess_length_strategy or "drop").lower()
    min_len = cfg.min_sample_len or 2
    if not len(dataset):
        return dataset
    lengths = lengths_of(dataset)
    too_long = lengths > max_len
    too_short = lengths < min_len
    if strategy == "raise" and too_long.any():
        raise UserError(f"a tokenized row has {int(lengths[too_long][0])} tokens, more than sequence_len {max_len}",
                        hint="raise sequence_len or set excess_length_strategy: drop|truncate")
    if strategy == "truncate":
        if too_short.any():
            dataset = dataset.select(np.flatnonzero(~too_short))
        stats.dropped_short += int(too_short.sum())
        stats.truncated += int((too_long & ~too_short).sum())
        if too_long.any():
            dataset = dataset.map(lambda b: {k: [x[:max_len] for x in b[k]] for k in TOKEN_COLUMNS if k in b},
                                  batched=True, load_from_cache_file=False)
        return dataset
    keep = ~too_long & ~too_short
    if not keep.all():
        dataset = dataset.select(np.flatnonzero(keep))
    stats.dropped_long += int(too_long.sum())
    stats.dropped_short += int((too_short & ~too_long).sum())
    return dataset


def prepare_for_packing(dataset: Any, stats: Stats) -> Any:
    """Drop rows with nothing to train, add ``position_ids`` (0..n-1 per row) and ``length``: in Arrow, one pass
    over the flat label and token columns instead of a Python loop per row."""
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    before = len(dataset)
    if not before:
        return dataset.map(lambda b: {"position_ids": [], "length": []}, batched=True, load_from_cache_file=False)
    table = table_of(dataset).combine_chunks()
    labels = table.column("labels").chunk(0)
    trained = pc.not_equal(pc.list_flatten(labels), IGNORE_INDEX).to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(labels).to_numpy(zero_copy_only=False)
    keep = np.bincount(parents[trained], minlength=before) > 0
    if not keep.all():
        table = table.filter(pa.array(keep))
    stats.dropped_untrainable += before - table.num_rows
    if not table.num_rows:
        raise UserError("no rows left after dropping rows with no trainable tokens",
                        hint="check train_on_inputs, roles_to_train and the prompt strategy")
    table = table.combine_chunks()
    ids = table.column("input_ids").chunk(0)
    lengths = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = np.arange(int(lengths.sum()), dtype=np.int64) - starts
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    table = table.append_column("position_ids", pa.ListArray.from_arrays(offsets, pa.array(positions)))
    table = table.append_column("length", pa.array(lengths))
    features = datasets.Features({**dataset.features, "position_ids": datasets.Sequence(datasets.Value("int64")),
                                  "length": datasets.Value("int64")})
    return dataset_from(table, dataset, "prepare_for_packing", features)


def deduplicate(dataset: Any, stats: Stats) -> Any:
    seen: set[int] = set()
    keep = []
    for i, row in enumerate(zip(*(dataset[c] for c in TOKEN_COLUMNS), strict=True)):
        key = hash(tuple(tuple(x) for x in row))
        if key not in seen:
            seen.add(key)
            keep.append(i)
    stats.deduplicated += len(dataset) - len(keep)
    return dataset.select(keep) if len(keep) != len(dataset) else dataset


def build_split(cfg: Any, tokenizer: Any, split: str, stats: Stats) -> Any:
    configs = cfg.datasets if split == "train" else cfg.test_datasets
    if not configs:
        raise UserError(f"{'datasets' if split == 'train' else 'test_datasets'}: no entries")
    parts = [tokenize_entry(cfg, ds, tokenizer, split, stats) for ds in _entries(configs)]
    dataset = merge(parts, cfg)
    stats.rows_tokenized += len(dataset)
    max_len = cfg.eval_sequence_len if (split == "test" and cfg.eval_sequence_len) else cfg.sequence_len
    dataset = handle_length(dataset, max_len, cfg, stats)
    if (split == "train" and cfg.sample_packing) or (split == "test" and eval_packing(cfg)):
        dataset = prepare_for_packing(dataset, stats)
    if cfg.dataset_exact_deduplication:
        dataset = deduplicate(dataset, stats)
    return dataset


def eval_packing(cfg: Any) -> bool:
    return bool(cfg.sample_packing) if cfg.eval_sample_packing is None else bool(cfg.eval_sample_packing)


def finish_train(dataset: Any, cfg: Any) -> tuple[Any, Any]:
    if cfg.dataset_shard_num and cfg.dataset_shard_idx is not None:
        dataset = dataset.shard(num_shards=cfg.dataset_shard_num, index=cfg.dataset_shard_idx)
    size = cfg.val_set_size or 0
    if not size:
        return dataset, None
    size = int(size) if size > 1 else float(size)
    if isinstance(size, int) and size >= len(dataset) or len(dataset) < 2:
        raise UserError(f"val_set_size {size} leaves no training rows ({len(dataset)} rows after preprocessing)")
    if cfg.dataset_exact_deduplication:
        dataset = dataset  # already deduplicated above
    parts = dataset.train_test_split(test_size=size, shuffle=False, seed=seed_of(cfg))
    return parts["train"], parts["test"]


def token_counts(dataset: Any) -> tuple[int, int]:
    import pyarrow.compute as pc

    if not len(dataset):
        return 0, 0
    table = table_of(dataset, ["labels"])
    flat = pc.list_flatten(table.column("labels"))
    return len(flat), int(pc.sum(pc.not_equal(flat, IGNORE_INDEX)).as_py() or 0)


def from_cache(cfg: Any, key: str, started: float) -> tuple[Any, Any, Stats] | None:
    """(train, eval, stats) saved under ``key`` by an earlier run, or None when there is no complete entry."""
    hit = cache.load(cfg, key)
    if hit is None:
        return None
    train, evaluation, saved = hit
    stats = Stats(**{**saved, "from_cache": True, "cache_dir": str(cache.path_for(cfg, key))})
    stats.seconds = time.perf_counter() - started
    return train, evaluation, stats


def build(cfg: Any, tokenizer: Any) -> tuple[Any, Any, Stats]:
    """Tokenized (unpacked) train and eval rows, from the cache when the fingerprint matches."""
    started = time.perf_counter()
    stats = Stats()
    key = cache.fingerprint(cfg, tokenizer)
    cached = from_cache(cfg, key, started)
    if cached is not None:
        return cached
    train_all = build_split(cfg, tokenizer, "train", stats)
    train, evaluation = finish_train(train_all, cfg)
    if cfg.test_datasets:
        evaluation = build_split(cfg, tokenizer, "test", stats)
    stats.train_rows = len(train)
    stats.eval_rows = len(evaluation) if evaluation is not None else 0
    stats.train_tokens, stats.trainable_tokens = token_counts(train)
    stats.seconds = time.perf_counter() - started
    written = cache.save(cfg, key, train, evaluation, stats)
    if written is not None:
        stats.cache_dir = str(written)
    return train, evaluation, stats
