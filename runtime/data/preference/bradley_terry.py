"""``type: bradley_terry.chat_template`` for reward models: ``system``/``input``/``chosen``/``rejected`` rows ->
the token ids of the two whole conversations, which TRL's RewardTrainer takes as already tokenized.

Each side is ``[system?, user: input, assistant: reply]`` rendered by the dataset's (or the run's) chat template
and tokenized exactly as ``type: chat_template`` rows are (that is what Axolotl does: its Bradley-Terry strategy
reuses its chat-template strategy), then cut to ``sequence_len`` tokens. Axolotl's other ``bradley_terry.*``
names (``llama3.icr``) do not load there either, so they are rejected here with the one that works.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.data.rows import RowError, need

PREFIX = "bradley_terry"
TYPES = ("bradley_terry.chat_template", "bradley_terry.chat_template.load")
COLUMNS = ("chosen_ids", "rejected_ids")


def is_bradley_terry(kind: Any) -> bool:
    return isinstance(kind, str) and (kind == PREFIX or kind.startswith(PREFIX + "."))


def transform(cfg: Any, ds: Any, tokenizer: Any) -> Any:
    """The row function for one dataset entry (its chat template resolved once, here)."""
    from mudpuppy.runtime.data.strategies import chat_strategy

    if ds.type not in TYPES:
        raise UserError(f"datasets: {ds.path}: unknown type {ds.type!r}",
                        hint="the Bradley-Terry format Axolotl loads is bradley_terry.chat_template")
    if not cfg.reward_model:
        raise UserError(f"datasets: {ds.path}: type {ds.type} is for reward models",
                        hint="set reward_model: true (with num_labels: 1), as Axolotl's reward-model examples do")
    strategy = chat_strategy(cfg, ds, tokenizer)
    limit = int(cfg.sequence_len)

    def tokenize(row: Mapping[str, Any]) -> dict[str, Any]:
        prompt = need(row, "input")
        out: dict[str, Any] = {}
        for side in ("chosen", "rejected"):
            messages = []
            if row.get("system"):
                messages.append({"role": "system", "content": row["system"]})
            messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": need(row, side)}]
            # the whole row goes along, as in Axolotl: an empty ``system`` still becomes an (empty) system turn
            ids = strategy.tokenize_one({**row, "messages": messages})["input_ids"]
            out[f"{side}_ids"] = ids[:limit]
        return out

    return tokenize


def check(row: Mapping[str, Any]) -> dict[str, Any]:
    for name in COLUMNS:
        if not row.get(name):
            raise RowError(name, "is empty after the chat template")
    return {name: row[name] for name in COLUMNS}
