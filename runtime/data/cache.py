"""``dataset_prepared_path`` cache: one folder per fingerprint of everything that changes the tokenized rows.

The fingerprint covers the config keys the pipeline reads, the tokenizer (its serialized vocab/merges/added
tokens and chat template) and the bytes of every local data file. A cache folder is written under a temporary
name and renamed into place, so a crash never leaves a half-written cache that a later run would trust.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mudpuppy.launcher import modules

FORMAT_VERSION = 1
CONFIG_KEYS = (
    "sequence_len", "eval_sequence_len", "train_on_inputs", "sample_packing", "eval_sample_packing",
    "val_set_size", "seed", "shuffle_merged_datasets", "shuffle_before_merging_datasets", "dataset_shard_num",
    "dataset_shard_idx", "excess_length_strategy", "min_sample_len", "dataset_exact_deduplication",
    "skip_invalid_rows", "chat_template", "chat_template_jinja", "chat_template_kwargs", "eot_tokens",
)


def path_for(cfg: Any, key: str) -> Path:
    return Path(cfg.dataset_prepared_path or "last_run_prepared") / key


def _hash_path(h: Any, path: Path) -> None:
    if path.is_file():
        h.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    elif path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(child.relative_to(path)).encode())
            _hash_path(h, child)


def tokenizer_digest(tokenizer: Any) -> str:
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(repr(sorted((str(k), str(v)) for k, v in tokenizer.special_tokens_map.items())).encode())
    h.update(str(getattr(tokenizer, "chat_template", None)).encode())
    h.update(type(tokenizer).__name__.encode())
    h.update(str(getattr(tokenizer, "name_or_path", "")).encode())
    return h.hexdigest()


def fingerprint(cfg: Any, tokenizer: Any) -> str:
    h = hashlib.sha256()
    h.update(f"mudpuppy-data-v{FORMAT_VERSION}".encode())
    h.update(json.dumps({k: getattr(cfg, k, None) for k in CONFIG_KEYS}, sort_keys=True, default=str).encode())
    for group in (cfg.datasets or [], cfg.test_datasets or []):
        for ds in group:
            h.update(json.dumps(ds.model_dump(mode="json"), sort_keys=True).encode())
            if ds.path and Path(ds.path).exists():
                _hash_path(h, Path(ds.path))
            if isinstance(ds.type, str):  # a user strategy module: its source decides the rows
                for _, source in modules.local_sources(ds.type):
                    h.update(source.read_bytes())
        h.update(b"|")
    h.update(tokenizer_digest(tokenizer).encode())
    return h.hexdigest()[:32]


def load(cfg: Any, key: str) -> tuple[Any, Any, dict[str, Any]] | None:
    if not cfg.dataset_prepared_path:
        return None
    folder = path_for(cfg, key)
    meta = folder / "stats.json"
    if not meta.is_file():
        return None
    import datasets

    saved = json.loads(meta.read_text())
    train = datasets.load_from_disk(str(folder / "train"))
    evaluation = datasets.load_from_disk(str(folder / "eval")) if (folder / "eval").is_dir() else None
    return train, evaluation, saved


def save(cfg: Any, key: str, train: Any, evaluation: Any, stats: Any) -> Path | None:
    if not cfg.dataset_prepared_path:
        return None
    final = path_for(cfg, key)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=final.parent))
    try:
        train.save_to_disk(str(tmp / "train"))
        if evaluation is not None:
            evaluation.save_to_disk(str(tmp / "eval"))
        fields = {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)}
        fields.update(from_cache=False, cache_dir=None, seconds=stats.seconds)
        (tmp / "stats.json").write_text(json.dumps(fields, indent=1, default=str))
        if final.exists():  # a concurrent run finished first; its copy is equivalent
            shutil.rmtree(tmp)
            return final
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
