"""``type: llama2_chat``: FastChat-style Llama-2 chat rows (``conversations: [{from: human|gpt|system, value}]``).

The conversation becomes one string in Llama-2's ``[INST] <<SYS>> ... <</SYS>>`` layout (the first user turn
follows the system block directly; later user turns are ``[INST] text `` and replies ``[/INST] text </s><s>``;
a trailing user turn is dropped). It is tokenized once, padded to ``sequence_len`` with the pad token, and the
labels are found the way Axolotl (after FastChat) finds them: split the text at `` </s><s>``, count each turn's
tokens and mask its instruction part. When the counted length disagrees with the real one the whole row is
masked, and Llama-2's id 29961 (``▁[``) is rewritten to 518 (``[``), all as in Axolotl, so rows match it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mudpuppy.runtime.data.rows import IGNORE_INDEX, Row, RowError, need

DEFAULT_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe. "
    "Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. "
    "Please ensure that your responses are socially unbiased and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of answering "
    "something not correct. If you don't know the answer to a question, please don't share false information."
)
USER, REPLY = "[INST]", "[/INST]"
SEPS = (" ", " </s><s>")


def system_block(text: str) -> str:
    return f"[INST] <<SYS>>\n{text}\n<</SYS>>\n\n"


def conversation_text(row: Mapping[str, Any]) -> str:
    """The Llama-2 prompt for one row (FastChat's ``get_prompt``)."""
    turns = need(row, "conversations")
    if not isinstance(turns, list) or not all(isinstance(t, Mapping) for t in turns):
        raise RowError("conversations", "must be a list of {from, value} objects")
    system = system_block(DEFAULT_SYSTEM)
    if turns and turns[0].get("from") == "system":
        system = system_block(str(turns[0].get("value")))
        turns = turns[1:]
    if len(turns) < 2:
        raise RowError("conversations", "needs at least one human turn and one gpt reply")
    roles = {"human": USER, "gpt": REPLY}
    for k, turn in enumerate(turns):
        if turn.get("from") not in roles:
            raise RowError(f"conversations[{k}].from", f"{turn.get('from')!r}: llama2_chat knows human, gpt, system")
    if roles[turns[0]["from"]] != USER:
        turns = turns[1:]
    messages: list[tuple[str, str]] = []
    for k, turn in enumerate(turns):
        role = roles[turn["from"]]
        if role != (USER, REPLY)[k % 2]:
            raise RowError("conversations", "roles must alternate human/gpt (after an optional system turn)")
        if turn.get("value"):
            messages.append((role, str(turn["value"])))
    text = ""
    for i, (role, message) in enumerate(messages):
        if i == len(messages) - 1 and role == USER:
            break
        if i == 0:
            text += system + message.strip()
        else:
            text += role + " " + message.strip() + SEPS[i % 2]
    return text


@dataclass
class Llama2ChatStrategy:
    tokenizer: Any
    sequence_len: int
    name: str = "llama2_chat"
    batched: bool = field(default=False, init=False)

    def tokenize_rows(self, rows: list[Mapping[str, Any]]) -> list[list[Row] | RowError]:
        out: list[list[Row] | RowError] = []
        for row in rows:
            try:
                out.append([self.tokenize_one(row)])
            except RowError as exc:
                out.append(exc)
        return out

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def tokenize_one(self, row: Mapping[str, Any]) -> Row:
        text = conversation_text(row)
        tok = self.tokenizer
        pad = tok.pad_token_id
        ids = list(tok(text, truncation=True, max_length=self.sequence_len)["input_ids"])
        ids += [pad] * (self.sequence_len - len(ids))
        labels = list(ids)
        total = sum(1 for t in ids if t != pad)
        cur = 1
        labels[0] = IGNORE_INDEX
        for turn in text.split(SEPS[1]):
            if turn == "":
                break
            turn_len = self._count(turn)
            parts = turn.split(REPLY)
            if len(parts) != 2:
                break
            instruction_len = self._count(parts[0] + REPLY) - 1
            for i in range(cur - 1, min(cur + instruction_len, len(labels))):
                labels[i] = IGNORE_INDEX
            cur += turn_len + 2
        for i in range(cur, len(labels)):
            labels[i] = IGNORE_INDEX
        if cur < self.sequence_len and cur != total:
            labels = [IGNORE_INDEX] * len(labels)
        mask = [1 if t != pad else 0 for t in ids]
        for i in range(2, total - 2):
            if ids[i] == 29961:
                ids[i] = 518
            if labels[i] == 29961:
                labels[i] = 518
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
