"""``type: pygmalion``: ``conversations: [{role: system|human|bot, value}]`` rows in Pygmalion's layout.

Each turn is tokenized on its own, as Axolotl does, and the pieces are concatenated: the system turn keeps BOS
(``<|system|>Persona: ...``, a trailing ``\\n<START>`` dropped), user turns (``<|user|> ...``) lose BOS, bot turns
(``<|model|> ...``) lose BOS and gain EOS. Only bot turns train, minus their ``<|model|>`` prefix tokens, whatever
``train_on_inputs`` says. The attention mask is 0 on pad-token ids (EOS when pad falls back to EOS), as in
Axolotl. All turns of a batch go through the tokenizer in one call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mudpuppy.runtime.data.rows import IGNORE_INDEX, Row, RowError, need

PREFIX = {"system": "<|system|>Persona: ", "human": "<|user|> ", "bot": "<|model|> "}


@dataclass
class PygmalionStrategy:
    tokenizer: Any
    sequence_len: int
    name: str = "pygmalion"
    batched: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        ids = self._encode(["<|model|>"])[0]
        self.bot_prefix = len(ids) - (1 if ids and ids[0] == self.tokenizer.bos_token_id else 0)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return [list(x) for x in self.tokenizer(texts, truncation=True, max_length=self.sequence_len,
                                                padding=False)["input_ids"]]

    def tokenize_rows(self, rows: list[Mapping[str, Any]]) -> list[list[Row] | RowError]:
        out: list[list[Row] | RowError] = [[] for _ in rows]
        texts: list[str] = []
        owners: list[tuple[int, str]] = []
        for i, row in enumerate(rows):
            try:
                turns = need(row, "conversations")
                if not isinstance(turns, list):
                    raise RowError("conversations", "must be a list of {role, value} objects")
                parts: list[tuple[str, str]] = []
                for k, turn in enumerate(turns):
                    if not isinstance(turn, Mapping) or not isinstance(turn.get("value"), str):
                        raise RowError(f"conversations[{k}]", "needs a 'role' and a string 'value'")
                    role, text = turn.get("role"), turn["value"]
                    if role not in PREFIX:
                        continue  # Axolotl skips unknown roles (with a warning)
                    if role == "system" and text.endswith("\n<START>"):
                        text = text[: -len("\n<START>")]
                    parts.append((role, PREFIX[role] + text.strip()))
            except RowError as exc:
                out[i] = exc
                continue
            for role, text in parts:
                texts.append(text)
                owners.append((i, role))
        eos, bos, pad = self.tokenizer.eos_token_id, self.tokenizer.bos_token_id, self.tokenizer.pad_token_id
        built: dict[int, Row] = {}
        for (i, role), ids in zip(owners, self._encode(texts), strict=True):
            row = built.setdefault(i, {"input_ids": [], "attention_mask": [], "labels": []})
            if not ids:
                continue
            if role == "bot" and ids[-1] != eos and len(ids) < self.sequence_len:
                ids.append(eos)
            if role != "system" and ids[0] == bos:
                ids = ids[1:]
            if role == "bot":
                labels = [IGNORE_INDEX] * self.bot_prefix + ids[self.bot_prefix:]
            else:
                labels = [IGNORE_INDEX] * len(ids)
            row["input_ids"] += ids
            row["attention_mask"] += [0 if t == pad else 1 for t in ids]
            row["labels"] += labels
        for i, row in built.items():
            if not isinstance(out[i], RowError):
                out[i] = [row]
        for i, result in enumerate(out):
            if result == [] and i not in built:
                out[i] = [{"input_ids": [], "attention_mask": [], "labels": []}]
        return out
