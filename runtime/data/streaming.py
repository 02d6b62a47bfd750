"""``pretraining_dataset``: text streamed from a local file/folder or the hub, tokenized and packed on the fly.

What Axolotl does (``utils/data/streaming.py``, ``prompt_strategies/pretrain.py``), and so what this does:

* The first ``pretraining_dataset`` entry is opened with ``datasets.load_dataset(..., streaming=True)``; ``skip``
  drops its first rows; with ``shuffle_merged_datasets`` (the default) the raw rows go through a seeded shuffle
  buffer of ``streaming_multipack_buffer_size`` rows (10 000 unless set), the algorithm of datasets 4.
* Rows are taken in chunks of that buffer size and each chunk is encoded:
  - ``sample_packing: true``: ``type: pretrain`` cuts each text into windows of ``sequence_len - 1`` tokens (the
    tokenizer's own special tokens, overlapping by ``min(256, (sequence_len - 1) // 2)`` tokens) and appends EOS
    to each; any other ``type`` (``completion``, ...) tokenizes rows with that SFT strategy. Windows shorter than
    ``min_sample_len`` (2) or longer than ``sequence_len`` are dropped, and the rest are packed into rows of
    ``sequence_len`` tokens whose ``position_ids`` restart per window (``pretrain_multipack_attn``: packed
    windows never attend to each other; false: one causal row). Labels are the tokens themselves.
  - otherwise each text is truncated to ``sequence_len - 2`` tokens; with ``pretraining_sample_concatenation``
    EOS (label) and a pad (label -100, mask 0) follow each text and texts are concatenated into rows of exactly
    ``sequence_len`` tokens, padded at the end.
* ``max_steps`` is required: the stream has no length. When it runs out before ``max_steps``, it starts again
  (the next epoch reshuffles with ``seed + epoch``).

Differences, on purpose: Axolotl orders each chunk's windows with torch's unseeded-by-config ``RandomSampler``
before first-fit packing and packs ``micro_batch_size x sequence_len`` tokens into one row (then sets
``micro_batch_size: 1``); here windows are packed first-fit-decreasing in chunk order into ``sequence_len`` rows
and ``micro_batch_size`` of them make a batch (the same tokens per step), so the stream is a pure function of
the config. That is what makes a resumed run exact: the trainer skips the batches it already consumed
(transformers' ``skip_first_batches``) and the rows it then reads are the ones an uninterrupted run would read.
Without ``pretrain_multipack_attn`` the row gets an all-ones attention mask instead of restarting positions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.data.rows import IGNORE_INDEX

BUILDERS = ("json", "csv", "parquet", "text", "arrow", "webdataset")
DEFAULT_BUFFER = 10_000


def entry_of(cfg: Any) -> Any:
    entries = cfg.pretraining_dataset
    return entries[0] if isinstance(entries, list) else entries


def buffer_size(cfg: Any) -> int:
    """``streaming_multipack_buffer_size``; the old ``pretrain_multipack_buffer_size`` when only it was changed."""
    new = cfg.streaming_multipack_buffer_size
    if cfg.pretrain_multipack_buffer_size and new in (None, DEFAULT_BUFFER):
        return int(cfg.pretrain_multipack_buffer_size)
    return int(new or DEFAULT_BUFFER)


def planned_rows(cfg: Any, world_size: int) -> int:
    """Rows ``max_steps`` optimizer steps consume: what the trainer plans with (the stream itself has no length)."""
    return int(cfg.max_steps) * int(cfg.micro_batch_size or 1) * int(cfg.gradient_accumulation_steps or 1) \
        * max(1, world_size)


def prepare_streamed(cfg: Any, tokenizer: Any) -> tuple[Any, Any]:
    """(train stream, eval rows or None): ``test_datasets`` are tokenized ahead as usual."""
    evaluation = None
    if cfg.test_datasets:
        from mudpuppy.runtime.data import packing, pipeline

        evaluation = pipeline.build_split(cfg, tokenizer, "test", pipeline.Stats())
        if pipeline.eval_packing(cfg):
            evaluation, _ = packing.pack_dataset(evaluation, cfg.eval_sequence_len or cfg.sequence_len,
                                                 cfg.sample_packing_group_size or 100_000,
                                                 cfg.sample_packing_bin_size or 200)
    return StreamedPretraining(cfg, tokenizer), evaluation


def open_stream(entry: Any) -> Any:
    """The raw rows of a ``pretraining_dataset`` entry as a ``datasets.IterableDataset`` (nothing read yet)."""
    import datasets

    from mudpuppy.runtime.data.loading import _offline, ds_type

    path = entry.path
    if not path:
        raise UserError("pretraining_dataset: the entry has no path")
    from pathlib import Path

    local = Path(path)
    split = entry.split or "train"
    files = [entry.data_files] if isinstance(entry.data_files, str) else entry.data_files
    try:
        if local.is_file():
            return datasets.load_dataset(ds_type(entry, path), data_files=str(local), split=split, streaming=True)
        if local.is_dir():
            if files:
                found = [str(local / f) for f in files]
                return datasets.load_dataset(ds_type(entry, found[0]), data_files=found, split=split, streaming=True)
            return datasets.load_dataset(str(local), name=entry.name, split=split, streaming=True)
        if path in BUILDERS:
            if not files:
                raise UserError(f"pretraining_dataset: path: {path} needs data_files (the files to read)")
            return datasets.load_dataset(path, data_files=files, split=split, streaming=True)
        if path.startswith((".", "/", "~")) or path.count("/") != 1 or _offline():
            raise UserError(f"pretraining_dataset: path {path!r} does not exist",
                            hint="give a local file or folder, `path: json` with data_files, or a hub id when online")
        return datasets.load_dataset(path, name=entry.name, split=split, data_files=files, streaming=True,
                                     revision=entry.revision, trust_remote_code=bool(entry.trust_remote_code))
    except UserError:
        raise
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise UserError(f"pretraining_dataset: cannot open {path!r}: {(str(exc).splitlines() or ['?'])[0]}") from None


def shuffle_buffer(rows: Iterator[dict[str, Any]], seed: int, size: int) -> Iterator[dict[str, Any]]:
    """The shuffle buffer of ``datasets`` 4 (what Axolotl 0.19 runs): fill ``size`` rows, then each new row replaces
    a uniformly drawn one, which is yielded; the rest come out shuffled at the end. Ours, so the order does not move
    with the installed ``datasets`` (5.x shuffles differently), which keeps parity and resumed runs exact."""
    import numpy as np

    rng = np.random.default_rng(seed)
    buffer: list[dict[str, Any]] = []
    draws: list[int] = []
    for row in rows:
        if len(buffer) < size:
            buffer.append(row)
            continue
        if not draws:
            draws = [int(i) for i in rng.integers(0, size, size=1000)][::-1]
        i = draws.pop()
        yield buffer[i]
        buffer[i] = row
    rng.shuffle(buffer)  # type: ignore[arg-type]
    yield from buffer


# ---------------------------------------------------------------------------------------------- encoding
def pretrain_windows(tokenizer: Any, texts: list[str], sequence_len: int) -> list[list[int]]:
    """Axolotl's ``type: pretrain`` tokenization: overlapping windows of ``sequence_len - 1`` tokens, + EOS each."""
    stride = min(256, (sequence_len - 1) // 2)
    out: list[list[int]] = []
    for text in texts:
        enc = tokenizer(text, truncation=True, max_length=sequence_len - 1, add_special_tokens=True,
                        return_overflowing_tokens=True, stride=stride)
        out.extend([*ids, tokenizer.eos_token_id] for ids in enc["input_ids"])
    return out


def strategy_windows(cfg: Any, entry: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> list[list[int]]:
    """Any SFT ``type`` over streamed rows (e.g. ``completion`` with ``field``): its tokenized pieces' input_ids."""
    from mudpuppy.runtime.data.rows import RowError
    from mudpuppy.runtime.data.strategies import build_strategy

    strategy = build_strategy(cfg, entry, tokenizer)
    out: list[list[int]] = []
    for i, result in enumerate(strategy.tokenize_rows(rows)):
        if isinstance(result, RowError):
            if cfg.skip_invalid_rows:
                continue
            raise UserError(f"pretraining_dataset: {entry.path}: streamed row {i}: {result}",
                            hint="fix the row or set skip_invalid_rows: true")
        out.extend(list(piece["input_ids"]) for piece in result)
    return out


def pack_windows(windows: list[list[int]], sequence_len: int, min_len: int, multipack_attn: bool,
                 bin_size: int) -> list[dict[str, Any]]:
    """Windows of one chunk -> packed rows of at most ``sequence_len`` tokens (first-fit decreasing, chunk order)."""
    from mudpuppy.runtime.data.packing import pack_lengths

    kept = [w for w in windows if min_len <= len(w) <= sequence_len]
    if not kept:
        return []
    rows = []
    for members in pack_lengths([len(w) for w in kept], sequence_len, group_size=len(kept), bin_size=bin_size):
        ids = [t for i in members for t in kept[i]]
        row: dict[str, Any] = {"input_ids": ids, "labels": list(ids)}
        if multipack_attn:
            row["position_ids"] = [p for i in members for p in range(len(kept[i]))]
        else:
            row["attention_mask"] = [1] * len(ids)
        rows.append(row)
    return rows


def encode_plain(tokenizer: Any, texts: list[str], sequence_len: int, concatenate: bool) -> list[dict[str, Any]]:
    """Axolotl's unpacked streaming rows: each text cut to ``sequence_len - 2``; optionally concatenated."""
    enc = tokenizer(texts, truncation=True, max_length=sequence_len - 2, add_special_tokens=True)["input_ids"]
    if not concatenate:
        return [{"input_ids": list(ids), "labels": list(ids), "attention_mask": [1] * len(ids)} for ids in enc]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    rows: list[dict[str, Any]] = []
    ids_buf: list[int] = []
    lab_buf: list[int] = []
    mask_buf: list[int] = []

    def flush() -> None:
        room = sequence_len - len(ids_buf)
        rows.append({"input_ids": ids_buf + [pad] * room, "labels": lab_buf + [IGNORE_INDEX] * room,
                     "attention_mask": mask_buf + [0] * room})

    for ids in enc:
        piece = [*ids, eos, pad]
        labels = [*ids, eos, IGNORE_INDEX]
        mask = [1] * (len(ids) + 1) + [0]
        if len(ids_buf) == sequence_len or len(ids_buf) + len(piece) > sequence_len:
            flush()
            ids_buf, lab_buf, mask_buf = [], [], []
        ids_buf += piece
        lab_buf += labels
        mask_buf += mask
    if ids_buf:
        flush()
    return rows


# ---------------------------------------------------------------------------------------------- the dataset
def _torch_iterable() -> type:
    from torch.utils.data import IterableDataset

    return IterableDataset


class StreamedPretraining(_torch_iterable()):  # type: ignore[misc]
    """A torch ``IterableDataset`` of training rows from ``pretraining_dataset``; deterministic for a config."""

    def __init__(self, cfg: Any, tokenizer: Any) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.entry = entry_of(cfg)
        self.epoch = 0
        self.seed = 42 if cfg.seed is None else int(cfg.seed)
        if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise UserError("pretraining_dataset: the tokenizer needs an EOS and a pad token",
                            hint="set special_tokens: {eos_token: ..., pad_token: ...}")
        open_stream(self.entry)  # a missing file or offline hub id fails now, in one line, not in the data loader

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def raw_rows(self) -> Iterator[dict[str, Any]]:
        stream = open_stream(self.entry)
        if self.entry.skip:
            stream = stream.skip(int(self.entry.skip))
        if self.cfg.shuffle_merged_datasets is not False:
            return shuffle_buffer(iter(stream), self.seed + self.epoch, buffer_size(self.cfg))
        return iter(stream)

    def encode(self, chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
        cfg, tok = self.cfg, self.tokenizer
        column = getattr(self.entry, "text_column", None) or "text"
        if cfg.sample_packing:
            if (self.entry.type or "pretrain") == "pretrain":
                windows = pretrain_windows(tok, [self._text(r, column) for r in chunk], cfg.sequence_len)
            else:
                windows = strategy_windows(cfg, self.entry, tok, chunk)
            return pack_windows(windows, cfg.sequence_len, cfg.min_sample_len or 2,
                                cfg.pretrain_multipack_attn is not False, cfg.sample_packing_bin_size or 200)
        return encode_plain(tok, [self._text(r, column) for r in chunk], cfg.sequence_len,
                            cfg.pretraining_sample_concatenation is True)

    def _text(self, row: dict[str, Any], column: str) -> str:
        if column not in row:
            raise UserError(f"pretraining_dataset: {self.entry.path}: streamed rows have no {column!r} column "
                            f"(columns: {', '.join(sorted(row))})", hint="set text_column: to the text's column")
        return str(row[column])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        size = buffer_size(self.cfg)
        chunk: list[dict[str, Any]] = []
        for row in self.raw_rows():
            chunk.append(row)
            if len(chunk) == size:
                yield from self.encode(chunk)
                chunk = []
        if chunk:
            yield from self.encode(chunk)
