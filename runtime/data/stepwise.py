"""``type: stepwise_supervised``: process-reward-model rows ``{prompt, completions: [step, ...], labels: [bool, ...]}``.

Each step is tokenized on its own and followed by the step separator (``step_separator``, default a newline);
only the last token of a step (its separator) carries a label, the step's 0/1 correctness, so a token
classification head learns to judge each step where it ends (TRL's former PRMTrainer layout, which Axolotl
kept). The prompt gets BOS when the tokenizer has one and is never labelled; ``sequence_len`` cuts the row.

Axolotl's schema reads a stepwise entry as a plain SFT entry, so its ``step_separator``,
``max_completion_length`` and ``train_on_last_step_only`` never reach the strategy there (the oracle goldens
show the newline separator whatever is set). They are accepted and ignored here too, with a warning, so rows
stay identical to Axolotl's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mudpuppy.runtime.data.rows import IGNORE_INDEX, Row, RowError, need

log = logging.getLogger(__name__)
TYPES = ("stepwise_supervised", "stepwise_supervised.load")
IGNORED = ("step_separator", "max_completion_length", "train_on_last_step_only")


@dataclass
class StepwiseStrategy:
    tokenizer: Any
    sequence_len: int
    step_separator: str = "\n"
    max_completion_length: int | None = None
    train_on_last_step_only: bool = False
    name: str = "stepwise_supervised"
    batched: bool = field(default=False, init=False)

    def tokenize_rows(self, rows: list[Mapping[str, Any]]) -> list[list[Row] | RowError]:
        out: list[list[Row] | RowError] = []
        for row in rows:
            try:
                out.append([self.tokenize_one(row)])
            except RowError as exc:
                out.append(exc)
        return out

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def tokenize_one(self, row: Mapping[str, Any]) -> Row:
        prompt = need(row, "prompt")
        steps = need(row, "completions")
        marks = need(row, "labels")
        if not isinstance(prompt, str):
            raise RowError("prompt", "must be text")
        if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
            raise RowError("completions", "must be a list of step texts")
        if not isinstance(marks, list) or len(marks) != len(steps):
            raise RowError("labels", f"needs one true/false per step ({len(steps)} steps)")
        try:
            values = [int(m) for m in marks]
        except (TypeError, ValueError):
            raise RowError("labels", "each label must be true/false or 0/1") from None
        if self.train_on_last_step_only:
            values = [IGNORE_INDEX] * (len(values) - 1) + values[-1:]
        separator = self._ids(self.step_separator)
        completion: list[int] = []
        labels: list[int] = []
        for step, value in zip(steps, values, strict=True):
            ids = self._ids(step) + separator
            completion += ids
            labels += [IGNORE_INDEX] * (len(ids) - 1) + [value]
        if self.max_completion_length:
            completion = completion[: self.max_completion_length]
            labels = labels[: self.max_completion_length]
        head = self._ids(prompt)
        if self.tokenizer.bos_token_id is not None:
            head = [self.tokenizer.bos_token_id, *head]
        input_ids = (head + completion)[: self.sequence_len]
        all_labels = ([IGNORE_INDEX] * len(head) + labels)[: self.sequence_len]
        return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": all_labels}


def stepwise_strategy(ds: Any, tokenizer: Any, sequence_len: int) -> StepwiseStrategy:
    effective = {"step_separator": "\n", "max_completion_length": None, "train_on_last_step_only": False}
    ignored = [key for key in IGNORED if getattr(ds, key, None) not in (None, effective[key])]
    if ignored:
        log.warning("datasets: %s: %s ignored, as Axolotl ignores them (its schema drops them): steps end with a "
                    "newline and every step is labelled", ds.path, ", ".join(ignored))
    return StepwiseStrategy(tokenizer, sequence_len)
