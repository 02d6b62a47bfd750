"""Datasets: loading, prompt strategies, chat templates, packing; ``prepare_datasets(cfg, tokenizer)``.

Rows are what Axolotl produces for the same config, data and tokenizer: ``input_ids``, ``attention_mask``,
``labels`` (-100 where masked), in the same order. With ``sample_packing: true`` the train rows come back
packed (format and collation: ``mudpuppy.runtime.data.packing``); ``prepare`` gives both views plus stats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mudpuppy.runtime.data.rows import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "Prepared", "prepare", "prepare_datasets"]


@dataclass
class Prepared:
    train: Any                 # tokenized rows (+ position_ids/length when packing), datasets.Dataset
    eval: Any                  # same for eval, or None
    train_packed: Any          # packed bins when sample_packing, else None
    eval_packed: Any           # packed bins when eval packing is on and there is an eval set, else None
    stats: Any                 # pipeline.Stats


def prepare(cfg: Any, tokenizer: Any = None) -> Prepared:
    from mudpuppy.runtime.data import packing, pipeline

    if tokenizer is None:
        from mudpuppy.runtime.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(cfg)
    from mudpuppy.runtime.data import preference

    if preference.is_preference(cfg):  # rl / reward model rows: text in TRL's shape, never packed
        train, evaluation, stats = preference.build(cfg, tokenizer)
        return Prepared(train, evaluation, None, None, stats)
    train, evaluation, stats = pipeline.build(cfg, tokenizer)
    train_packed = eval_packed = None
    group = cfg.sample_packing_group_size or 100_000
    bin_size = cfg.sample_packing_bin_size or 200
    sequential = bool(cfg.sample_packing_sequentially)
    if cfg.sample_packing:
        train_packed, stats.packing_efficiency = packing.pack_dataset(train, cfg.sequence_len, group, bin_size,
                                                                      sequential=sequential)
        stats.packed_bins = len(train_packed)
    if evaluation is not None and pipeline.eval_packing(cfg):
        capacity = cfg.eval_sequence_len or cfg.sequence_len
        eval_packed, _ = packing.pack_dataset(evaluation, capacity, group, bin_size, sequential=sequential)
    return Prepared(train, evaluation, train_packed, eval_packed, stats)


def prepare_datasets(cfg: Any, tokenizer: Any = None) -> tuple[Any, Any]:
    """(train, eval): packed bins when packing is on for that split, tokenized rows otherwise."""
    p = prepare(cfg, tokenizer)
    train = p.train_packed if p.train_packed is not None else p.train
    evaluation = p.eval_packed if p.eval_packed is not None else p.eval
    return train, evaluation
