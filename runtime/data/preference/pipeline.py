"""Preference/RL rows from ``datasets:`` entries, in Axolotl's order so rows and row order match it:

per entry: load -> ``shards`` -> transform (type) -> check the fields TRL needs -> excess length (drop /
truncate / raise, counted in tokens without special tokens, prompt+chosen and prompt+rejected each within
``sequence_len``); then merge (+ seeded shuffle) -> exact dedup -> cache; then ``test_datasets`` or the
``val_set_size`` split (seeded, unshuffled tail). Rows stay text: TRL's trainers tokenize them, so the tokens
they train on are TRL's own (``tokenized.trl_rows`` shows them for ``preprocess --dump``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.data import cache
from mudpuppy.runtime.data.loading import load_raw
from mudpuppy.runtime.data.pipeline import Stats, from_cache, merge, seed_of
from mudpuppy.runtime.data.preference import bradley_terry
from mudpuppy.runtime.data.preference.custom import module_file
from mudpuppy.runtime.data.preference.strategies import COLUMNS, RowTransform, build_transform, family_of
from mudpuppy.runtime.data.rows import RowError

FORMAT_VERSION = 1
RL_KEYS = ("rl", "reward_model", "process_reward_model")


def _check(row: Mapping[str, Any], family: str) -> dict[str, Any]:
    """The fields TRL needs are present and non-empty (Axolotl fails on the same rows, without saying where)."""
    if family == "strided":
        from mudpuppy.runtime.rl.ebft_strided_data import check

        return check(row)
    out = dict(row)
    for name in COLUMNS[family]:
        if name not in out or out[name] is None:
            raise RowError(name, f"missing after the transform (rl needs {', '.join(COLUMNS[family])})")
        if name != "label" and out[name] in ("", []):
            raise RowError(name, "is empty")
    if family == "kto":
        label = out["label"]
        if isinstance(label, bool):
            pass
        elif isinstance(label, int) and label in (0, 1):
            out["label"] = bool(label)
        else:
            raise RowError("label", f"expected true/false, got {label!r}")
    return out


def _transform_rows(raw: Any, transform: RowTransform, family: str, source: str, skip: bool,
                    stats: Stats) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for index, row in enumerate(raw):
        try:
            out = transform.apply(row)
            rows.append(bradley_terry.check(out) if transform.tokenized else _check(out, family))
        except RowError as err:
            if not skip:
                raise UserError(f"{source}: row {index}: {err}", hint="fix the row or set skip_invalid_rows: true") \
                    from None
            stats.skipped_invalid += 1
    return rows


def _lengths(tokenizer: Any, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _completion_fields(family: str) -> tuple[str, ...]:
    return ("completion",) if family == "kto" else ("chosen", "rejected")


def handle_length(rows: list[dict[str, Any]], cfg: Any, tokenizer: Any, family: str, source: str,
                  stats: Stats) -> list[dict[str, Any]]:
    if family in ("grpo", "strided") or cfg.skip_prepare_dataset or not rows:  # strided rows are cut already
        return rows
    strategy = (cfg.excess_length_strategy or "drop").lower()
    limit = cfg.sequence_len
    prompt_len = _lengths(tokenizer, [r["prompt"] for r in rows])
    fields = _completion_fields(family)
    lens = {f: _lengths(tokenizer, [r[f] for r in rows]) for f in fields}
    kept = []
    for i, row in enumerate(rows):
        too_long = [f for f in fields if prompt_len[i] + lens[f][i] > limit]
        if not too_long:
            kept.append(row)
            continue
        if strategy == "raise":
            raise UserError(f"{source}: row {i}: prompt + {too_long[0]} is {prompt_len[i] + lens[too_long[0]][i]} "
                            f"tokens, more than sequence_len {limit}",
                            hint="raise sequence_len or set excess_length_strategy: drop|truncate")
        room = limit - prompt_len[i]
        if strategy == "truncate" and room > 0:
            row = dict(row)
            for f in too_long:
                ids = tokenizer(row[f], add_special_tokens=False)["input_ids"][:room]
                row[f] = tokenizer.decode(ids, skip_special_tokens=False)
            stats.truncated += 1
            kept.append(row)
            continue
        stats.dropped_long += 1
    return kept


def _tokens(rows: Any, tokenizer: Any, family: str, stats: Stats) -> None:
    if family == "grpo" or not len(rows):
        return
    if family == "strided":  # real (unpadded) tokens; the trainer's CE term reads the labelled ones
        stats.train_tokens = sum(sum(r["attention_mask"]) for r in rows)
        stats.trainable_tokens = sum(sum(1 for x in r["labels"] if x != -100) for r in rows)
        return
    if "chosen_ids" in rows.column_names:
        stats.trainable_tokens = stats.train_tokens = sum(len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)
        return
    prompts = _lengths(tokenizer, list(rows["prompt"]))
    completions = [_lengths(tokenizer, list(rows[f])) for f in _completion_fields(family)]
    stats.trainable_tokens = sum(sum(c) for c in completions)
    stats.train_tokens = stats.trainable_tokens + sum(prompts) * len(completions)


def build_split(cfg: Any, tokenizer: Any, split: str, stats: Stats) -> Any:
    import datasets

    family = family_of(cfg)
    configs = cfg.datasets if split == "train" else cfg.test_datasets
    if not configs:
        raise UserError(f"{'datasets' if split == 'train' else 'test_datasets'}: no entries")
    skip = bool(cfg.skip_invalid_rows)
    parts = []
    kinds: set[bool] = set()
    for index, ds in enumerate(configs):
        raw, skipped_lines = load_raw(ds, split, skip_invalid=skip)
        stats.skipped_invalid += skipped_lines
        if ds.shards:
            raw = raw.shuffle(seed=seed_of(cfg)).shard(num_shards=ds.shards, index=ds.shards_idx or 0)
        stats.rows_in += len(raw) + skipped_lines
        transform = build_transform(cfg, ds, tokenizer, index)
        before = stats.skipped_invalid
        rows = _transform_rows(raw, transform, family, ds.path, skip, stats)
        if not transform.tokenized:  # token-id rows were cut to sequence_len by their transform, as in Axolotl
            rows = handle_length(rows, cfg, tokenizer, family, ds.path, stats)
        if not transform.keep_all:
            columns = bradley_terry.COLUMNS if transform.tokenized else transform.columns or COLUMNS[family]
            rows = [{k: r[k] for k in columns} for r in rows]
        kinds.add(transform.tokenized)
        if len(kinds) > 1:
            raise UserError(f"{ds.path}: bradley_terry.* datasets cannot be mixed with text preference datasets",
                            hint="give every reward-model dataset the same type")
        stats.per_dataset.append({"path": ds.path, "type": f"{family}: {transform.name}", "rows": len(raw),
                                  "skipped": stats.skipped_invalid - before + skipped_lines})
        parts.append(datasets.Dataset.from_list(rows) if rows else None)
    parts = [p for p in parts if p is not None]
    if not parts:
        raise UserError(f"{split}: no rows left after the preference transforms and length checks",
                        hint="check the dataset type, skip_invalid_rows and sequence_len")
    merged = merge(parts, cfg, columns=None)
    stats.rows_tokenized += len(merged)
    if cfg.dataset_exact_deduplication:
        merged = _deduplicate(merged, stats)
    return merged


def _deduplicate(dataset: Any, stats: Stats) -> Any:
    seen: set[str] = set()
    keep = []
    for i, row in enumerate(dataset):
        key = hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()
        if key not in seen:
            seen.add(key)
            keep.append(i)
    stats.deduplicated += len(dataset) - len(keep)
    return dataset.select(keep) if len(keep) != len(dataset) else dataset


def fingerprint(cfg: Any, tokenizer: Any) -> str:
    """The SFT cache key plus the rl keys and the source of any local transform module."""
    h = hashlib.sha256(f"mudpuppy-preference-v{FORMAT_VERSION}".encode())
    h.update(cache.fingerprint(cfg, tokenizer).encode())
    h.update(json.dumps({k: getattr(cfg, k, None) for k in RL_KEYS}, default=str).encode())
    h.update(family_of(cfg).encode())  # ebft.mode decides between text rows and token rows
    h.update(str(cfg.skip_prepare_dataset).encode())
    for ds in [*(cfg.datasets or []), *(cfg.test_datasets or [])]:
        if isinstance(ds.type, str):
            source = module_file(ds.type)
            if source is not None:
                h.update(source.read_bytes())
    return "pref-" + h.hexdigest()[:27]


def build(cfg: Any, tokenizer: Any) -> tuple[Any, Any, Stats]:
    """Train and eval rows in TRL's text shape, from the cache when the fingerprint matches."""
    started = time.perf_counter()
    stats = Stats()
    key = fingerprint(cfg, tokenizer)
    cached = from_cache(cfg, key, started)
    if cached is not None:
        return cached
    train = build_split(cfg, tokenizer, "train", stats)
    evaluation = None
    if cfg.test_datasets:
        evaluation = build_split(cfg, tokenizer, "test", stats)
    elif cfg.val_set_size:
        size = int(cfg.val_set_size) if cfg.val_set_size > 1 else float(cfg.val_set_size)
        if len(train) < 2 or (isinstance(size, int) and size >= len(train)):
            raise UserError(f"val_set_size {size} leaves no training rows ({len(train)} rows)")
        parts = train.train_test_split(test_size=size, shuffle=False, seed=seed_of(cfg))
        train, evaluation = parts["train"], parts["test"]
    stats.train_rows = len(train)
    stats.eval_rows = len(evaluation) if evaluation is not None else 0
    _tokens(train, tokenizer, family_of(cfg), stats)
    stats.seconds = time.perf_counter() - started
    written = cache.save(cfg, key, train, evaluation, stats)
    if written is not None:
        stats.cache_dir = str(written)
    return train, evaluation, stats
