"""Dataset types for ``rl: ebft`` with ``ebft.mode: strided``: rows become token ids padded to ``sequence_len``.

Axolotl's ``prompt_strategies.ebft`` shapes (``ebft_pretrain`` ships there in 0.19 and as an example file on main;
the two ``ebft_strided_*`` in both), re-expressed so the rows are identical (tests/unit/rl/test_golden.py compares
them with rows the Axolotl oracle produced):

- ``ebft_pretrain.transform``: ``question`` (else ``text``) tokenized with special tokens, cut and padded to
  ``sequence_len``; ``labels`` = ``input_ids`` (padding included, as in Axolotl; the trainer ignores padding).
- ``ebft_strided_structured.transform``: ``input|prompt|question`` + ``output|completion|answer`` tokenized apart
  (special tokens on the prompt only); the completion is cut first, then the prompt (keeping one completion
  token); ``labels`` -100 on the prompt and the padding; ``prompt_length`` says where anchors may start.
- ``ebft_strided_chat.transform``: the conversation through the tokenizer's chat template; assistant turns found
  by rendering growing prefixes; ``prompt_length`` is the first assistant token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mudpuppy.runtime.data.rows import RowError

Row = Mapping[str, Any]
Transform = Callable[[Row], dict[str, Any]]
COLUMNS = ("input_ids", "attention_mask", "labels", "prompt_length")


def _first(row: Row, names: tuple[str, ...], field: str) -> str:
    """Axolotl's ``row.get(a, row.get(b, ...))``: the first name present wins, even when its value is null."""
    for name in names:
        if name in row:
            value = row[name]
            break
    else:
        value = ""
    if not isinstance(value, str):
        raise RowError(name if name in row else field, f"expected text, got {type(value).__name__}")
    return value


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id or tokenizer.eos_token_id


def pretrain(cfg: Any, tokenizer: Any) -> Transform:
    seq_len = int(cfg.sequence_len)
    if tokenizer.pad_token_id is None:
        from mudpuppy.launcher.errors import UserError

        raise UserError("ebft_pretrain.transform pads rows to sequence_len but the tokenizer has no pad token",
                        hint="set special_tokens: {pad_token: ...} (Axolotl's examples use the EOS token)")

    def fn(row: Row) -> dict[str, Any]:
        text = _first(row, ("question", "text"), "text")
        enc = tokenizer(text, truncation=True, max_length=seq_len, padding="max_length", add_special_tokens=True)
        ids = list(enc["input_ids"])
        return {"input_ids": ids, "attention_mask": list(enc["attention_mask"]), "labels": list(ids)}

    return fn


def _padded(ids: list[int], labels: list[int], prompt_length: int, seq_len: int, pad: int) -> dict[str, Any]:
    missing = seq_len - len(ids)
    return {"input_ids": ids + [pad] * missing, "attention_mask": [1] * len(ids) + [0] * missing,
            "labels": labels + [-100] * missing, "prompt_length": prompt_length}


def strided_structured(cfg: Any, tokenizer: Any) -> Transform:
    seq_len = int(cfg.sequence_len)

    def fn(row: Row) -> dict[str, Any]:
        prompt = tokenizer(_first(row, ("input", "prompt", "question"), "input"), add_special_tokens=True)["input_ids"]
        answer = tokenizer(_first(row, ("output", "completion", "answer"), "output"),
                           add_special_tokens=False)["input_ids"]
        if len(prompt) + len(answer) > seq_len:
            room = seq_len - len(prompt)
            if room < 1:  # the prompt alone is too long: cut it, keep one completion token
                prompt, answer = prompt[: seq_len - 1], answer[:1]
            else:
                answer = answer[:room]
        return _padded(prompt + answer, [-100] * len(prompt) + answer, len(prompt), seq_len, _pad_id(tokenizer))

    return fn


def strided_chat(cfg: Any, tokenizer: Any) -> Transform:
    seq_len = int(cfg.sequence_len)

    def ids_of(messages: list[Any], generation_prompt: bool) -> list[int]:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        return list(tokenizer(text, truncation=True, max_length=seq_len, add_special_tokens=False)["input_ids"])

    def fn(row: Row) -> dict[str, Any]:
        messages = row["messages"] if "messages" in row else row.get("conversations") or []
        if not isinstance(messages, list):
            raise RowError("messages", f"expected a list of messages, got {type(messages).__name__}")
        ids = ids_of(messages, False)
        labels = [-100] * len(ids)
        seen: list[Any] = []
        for message in messages:
            if message.get("role") == "assistant":
                start = len(ids_of(seen, True))
                seen.append(message)
                end = min(len(ids_of(seen, False)), len(ids))
                labels[start:end] = ids[start:end]
            else:
                seen.append(message)
        first = next((i for i, label in enumerate(labels) if label != -100), len(ids))
        return _padded(ids, labels, first, seq_len, _pad_id(tokenizer))

    return fn


FACTORIES: dict[tuple[str, str], Callable[[Any, Any], Transform]] = {
    ("ebft_pretrain", "transform"): pretrain,
    ("ebft_strided_structured", "transform"): strided_structured,
    ("ebft_strided_chat", "transform"): strided_chat,
}


def check(row: Mapping[str, Any]) -> dict[str, Any]:
    """A strided row: equal-length token lists; ``attention_mask`` defaults to all ones, ``labels`` to the ids."""
    out = dict(row)
    ids = out.get("input_ids")
    if not isinstance(ids, list) or not ids:
        raise RowError("input_ids", "missing or empty after the transform (ebft.mode: strided trains on token rows; "
                                    "use ebft_pretrain/ebft_strided_structured/ebft_strided_chat.transform)")
    out.setdefault("attention_mask", [1] * len(ids))
    out.setdefault("labels", list(ids))
    for name in ("attention_mask", "labels"):
        if not isinstance(out[name], list) or len(out[name]) != len(ids):
            raise RowError(name, f"must be a list as long as input_ids ({len(ids)})")
    return out
