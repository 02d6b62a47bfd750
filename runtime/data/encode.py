"""Batch tokenization straight through a fast tokenizer's Rust backend, same ids as the tokenizer's ``__call__``.

transformers' ``tokenizer(texts)`` runs the backend's ``encode_batch`` and then converts every ``Encoding`` into
Python lists of ids, attention mask, offsets and more; for the short texts of a preprocess batch that conversion
was a fifth of the call (100k alpaca rows: 3 s of 17 s), and the offsets the backend tracks for it cost more in
Rust. Here ids come from ``encode_batch_fast`` (no offsets) and, where turns are located by character, offsets
from ``encode_batch``, read off the ``Encoding`` objects directly.

The backend is used only when the tokenizer's class runs transformers' own ``__call__``/``_encode_plus`` (a
subclass overriding either keeps the plain call). It is put in the state that call would put it in for
these arguments: no truncation, no padding, ``encode_special_tokens`` from ``split_special_tokens``. Truncation
is exact by construction: texts whose untruncated ids are longer than ``max_length`` are tokenized again
through ``__call__`` with ``truncation=True`` (only then can truncation change anything).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def backend_of(tokenizer: Any) -> Any:
    """The tokenizers ``Tokenizer`` to call, or None when the tokenizer's own ``__call__`` must be used."""
    if not getattr(tokenizer, "is_fast", False):
        return None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch"):
        return None
    try:
        from transformers.tokenization_utils_base import PreTrainedTokenizerBase
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:  # another transformers layout: keep the plain call
        return None
    cls = type(tokenizer)
    if cls.__call__ is not PreTrainedTokenizerBase.__call__ or cls._encode_plus is not TokenizersBackend._encode_plus:
        return None
    return backend


def _ready(tokenizer: Any, backend: Any) -> None:
    if backend.truncation is not None:
        backend.no_truncation()
    if backend.padding is not None:
        backend.no_padding()
    split = bool(getattr(tokenizer, "split_special_tokens", False))
    if backend.encode_special_tokens != split:
        backend.encode_special_tokens = split


def encode_ids(tokenizer: Any, texts: list[str], add_special_tokens: bool = True,
               max_length: int | None = None) -> list[list[int]]:
    """``tokenizer(texts, add_special_tokens=..., truncation=max_length is not None, max_length=...)["input_ids"]``."""
    if not texts:
        return []
    truncate = max_length is not None
    backend = backend_of(tokenizer)
    if backend is None:
        return [list(x) for x in tokenizer(texts, add_special_tokens=add_special_tokens, truncation=truncate,
                                           max_length=max_length, padding=False)["input_ids"]]
    _ready(tokenizer, backend)
    run = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
    ids = [e.ids for e in run(texts, add_special_tokens=add_special_tokens)]
    if truncate:
        long = [i for i, x in enumerate(ids) if len(x) > max_length]  # type: ignore[operator]
        if long:
            again = tokenizer([texts[i] for i in long], add_special_tokens=add_special_tokens, truncation=True,
                              max_length=max_length, padding=False)["input_ids"]
            for i, x in zip(long, again, strict=True):
                ids[i] = list(x)
    return ids


class Offsets(Sequence[tuple[int, int]]):
    """One encoding's (start, end) character offsets, read per token from the ``Encoding`` when asked: turns are
    located by bisecting these a few times per row, cheaper than turning every token's offsets into tuples."""

    __slots__ = ("encoding", "size", "listed")

    def __init__(self, encoding: Any) -> None:
        self.encoding = encoding
        self.size = len(encoding)
        self.listed: list[tuple[int, int]] | None = None

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int) and 0 <= index < self.size:
            found = self.encoding.token_to_chars(index)
            if found is not None:
                return found
        if self.listed is None:  # a token outside every sequence, a slice, a negative index: the full list
            self.listed = [tuple(o) for o in self.encoding.offsets]
        return self.listed[index]


def encode_offsets(tokenizer: Any, texts: list[str]) -> list[tuple[list[int], Sequence[tuple[int, int]]]]:
    """Per text: ids and character offsets, as ``tokenizer(texts, add_special_tokens=False,
    return_offsets_mapping=True)`` gives them (the tokenizer must be fast)."""
    if not texts:
        return []
    backend = backend_of(tokenizer)
    if backend is None:
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        return [(list(ids), [tuple(o) for o in offsets])
                for ids, offsets in zip(enc["input_ids"], enc["offset_mapping"], strict=True)]
    _ready(tokenizer, backend)
    return [(e.ids, Offsets(e)) for e in backend.encode_batch(texts, add_special_tokens=False)]
