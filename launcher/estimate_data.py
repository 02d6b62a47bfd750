"""Rows and tokens a config will train on, measured with the runtime's own pipeline (imported on call).

Why the runtime's pipeline: the estimate must count exactly the rows training sees (prompt strategy, chat
template, length filtering, eval split, packing), and a second tokenizer path would drift from it. Order:

1. the prepared dataset (``dataset_prepared_path`` with this config's fingerprint): every row, exactly;
2. otherwise, with at most ``sample_rows`` raw rows in all: every row, tokenized without writing the cache;
3. otherwise an evenly spaced sample of the raw rows (the same fraction of every dataset entry), tokenized and
   packed, then scaled by 1 / fraction. The report says which, and the fraction.

Nothing here writes ``dataset_prepared_path``. Needs the runtime's packages (``pip install 'mudpuppy[runtime]'``);
without them the caller reports the data as unmeasured.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mudpuppy.launcher.errors import UserError
from mudpuppy.launcher.estimate import DataSize

DEFAULT_SAMPLE_ROWS = 2000


def measure(cfg: Any, sample_rows: int = DEFAULT_SAMPLE_ROWS) -> DataSize:
    import datasets

    from mudpuppy.runtime.data import cache, loading, pipeline
    from mudpuppy.runtime.data.preference import is_preference
    from mudpuppy.runtime.tokenizer import load_tokenizer

    if is_preference(cfg):
        raise UserError(f"rl: {cfg.rl or 'reward_model'}: the estimate covers supervised fine-tuning only")
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    tokenizer = load_tokenizer(cfg)
    key = cache.fingerprint(cfg, tokenizer)
    hit = cache.load(cfg, key)
    if hit is not None:
        train, evaluation, _saved = hit
        return _size(cfg, train, evaluation, 1.0, f"prepared dataset {cache.path_for(cfg, key)}")
    uncached = cfg.model_copy(update={"dataset_prepared_path": None})
    raws = [loading.load_raw(ds, "train", skip_invalid=bool(cfg.skip_invalid_rows))[0]
            for ds in pipeline._entries(cfg.datasets or [])]
    total = sum(len(raw) for raw in raws)
    if total <= sample_rows:
        train, evaluation, _stats = pipeline.build(uncached, tokenizer)
        return _size(cfg, train, evaluation, 1.0, f"all {total:,} rows tokenized (not prepared yet)")
    fraction = sample_rows / total
    with tempfile.TemporaryDirectory(prefix="mudpuppy-estimate-") as tmp:
        entries = []
        for i, (ds, raw) in enumerate(zip(pipeline._entries(cfg.datasets or []), raws, strict=True)):
            count = max(1, round(len(raw) * fraction))
            step = len(raw) / count
            folder = Path(tmp) / f"entry-{i}"
            raw.select([int(j * step) for j in range(count)]).save_to_disk(str(folder))
            entries.append(ds.model_copy(update={
                "path": str(folder), "data_files": None, "split": None, "name": None, "revision": None,
                "ds_type": None, "shards": None, "shards_idx": None, "preprocess_shards": None}))
        update: dict[str, Any] = {"datasets": entries}
        if cfg.val_set_size and cfg.val_set_size > 1:  # a row count: the same share of the sample
            update["val_set_size"] = max(1, round(cfg.val_set_size * fraction))
        train, evaluation, _stats = pipeline.build(uncached.model_copy(update=update), tokenizer)
        return _size(cfg, train, evaluation, fraction,
                     f"{sample_rows:,} of {total:,} rows tokenized ({fraction:.1%} sample, scaled up)")


def _size(cfg: Any, train: Any, evaluation: Any, fraction: float, source: str) -> DataSize:
    from mudpuppy.runtime.data import packing, pipeline

    if train is None or len(train) == 0:
        raise UserError("datasets: no training rows left after preprocessing; nothing to estimate")
    lengths = pipeline.lengths_of(train)
    tokens = int(lengths.sum())
    sum_sq = int((lengths.astype("int64") ** 2).sum())
    batches = len(train)
    if cfg.sample_packing:
        packed, _efficiency = packing.pack_dataset(
            train, cfg.sequence_len, cfg.sample_packing_group_size or 100_000, cfg.sample_packing_bin_size or 200,
            sequential=bool(cfg.sample_packing_sequentially))
        batches = len(packed)
    scale = 1.0 / fraction
    return DataSize(rows=round(len(train) * scale), tokens=round(tokens * scale), sum_sq_len=round(sum_sq * scale),
                    batches_rows=round(batches * scale),
                    eval_rows=round((len(evaluation) if evaluation is not None else 0) * scale),
                    sampled=fraction, source=source)
