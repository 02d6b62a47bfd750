"""Axolotl's hand-written preference formats: ``chatml.*`` / ``llama3.*`` for DPO and KTO, ``user_defined``.

Each builder returns ``transform(row) -> dict`` producing the text columns TRL reads (DPO: prompt/chosen/
rejected; KTO: prompt/completion/label). Strings are rendered exactly as Axolotl renders them (same markers,
same newlines, a non-empty ``system`` becomes a system turn), so the rows match it character for character.
A missing field raises ``RowError`` naming it; the pipeline adds the file and row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mudpuppy.runtime.data.rows import RowError, need

Transform = Callable[[Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Markup:
    """How one family writes a turn, the assistant header that opens a reply, and the end of a reply."""

    turn: str
    reply: str
    end: str

    def prompt(self, user: str, system: Any = None) -> str:
        head = self.turn.format(role="system", content=system) if system else ""
        return head + self.turn.format(role="user", content=user) + self.reply


MARKUPS = {
    "chatml": Markup("<|im_start|>{role}\n{content}<|im_end|>\n", "<|im_start|>assistant\n", "<|im_end|>"),
    "llama3": Markup("<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
                     "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
}


def _content(value: Any, index: int, field: str) -> str:
    """``value[index]['content']`` of a message list, or a RowError saying what shape was expected."""
    try:
        return str(value[index]["content"])
    except (IndexError, KeyError, TypeError):
        raise RowError(field, f"expected a list of messages with a 'content' at position {index}") from None


def _first_present(row: Mapping[str, Any], names: tuple[str, ...]) -> str:
    for name in names:
        if name in row:
            return name
    return names[-1]


# ---------------------------------------------------------------- DPO (prompt / chosen / rejected)
def _dpo(markup: Markup, prompt_field: str | tuple[str, ...], pairs: str = "text") -> Transform:
    def transform(row: Mapping[str, Any]) -> dict[str, Any]:
        if pairs == "argilla_chat":
            chosen_msgs, rejected_msgs = need(row, "chosen"), need(row, "rejected")
            return {"prompt": markup.prompt(_content(chosen_msgs, 0, "chosen")),
                    "chosen": _content(chosen_msgs, 1, "chosen") + markup.end,
                    "rejected": _content(rejected_msgs, 1, "rejected") + markup.end}
        field = prompt_field if isinstance(prompt_field, str) else _first_present(row, prompt_field)
        prompt = markup.prompt(need(row, field), row.get("system"))
        if pairs == "ultra":
            chosen = _content(need(row, "chosen"), 1, "chosen")
            rejected = _content(need(row, "rejected"), 1, "rejected")
        elif pairs == "default":
            chosen = need(row, "chosen" if "chosen" in row else "chosen_response")
            rejected = need(row, "rejected" if "rejected" in row else "rejected_response")
        else:
            chosen, rejected = need(row, "chosen"), need(row, "rejected")
        return {"prompt": prompt, "chosen": f"{chosen}{markup.end}", "rejected": f"{rejected}{markup.end}"}

    return transform


DPO_TYPES: dict[str, Callable[[Markup], Transform]] = {
    "default": lambda m: _dpo(m, ("prompt", "input", "question", "instruction"), "default"),
    "argilla_chat": lambda m: _dpo(m, "", "argilla_chat"),
    "icr": lambda m: _dpo(m, "input"),
    "intel": lambda m: _dpo(m, "question"),
    "prompt_pairs": lambda m: _dpo(m, "prompt"),
    "ultra": lambda m: _dpo(m, "prompt", "ultra"),
}


# ---------------------------------------------------------------- KTO (prompt / completion / label)
def _kto(markup: Markup, prompt_field: str | None) -> Transform:
    def transform(row: Mapping[str, Any]) -> dict[str, Any]:
        label = need(row, "label")
        if prompt_field is None:  # argilla_chat: the conversation is in `completion`, its last turn is the reply
            turns = need(row, "completion")
            if not isinstance(turns, list) or not turns:
                raise RowError("completion", "expected a non-empty list of messages")
            try:
                history = "".join(markup.turn.format(role=t["role"], content=t["content"]) for t in turns[:-1])
            except (KeyError, TypeError):
                raise RowError("completion", "every message needs 'role' and 'content'") from None
            return {"prompt": history + markup.reply, "completion": _content(turns, -1, "completion") + markup.end,
                    "label": label}
        return {"prompt": markup.prompt(need(row, prompt_field), row.get("system")),
                "completion": f"{need(row, 'completion')}{markup.end}", "label": label}

    return transform


KTO_TYPES: dict[str, Callable[[Markup], Transform]] = {
    "argilla": lambda m: _kto(m, "instruction"),
    "argilla_chat": lambda m: _kto(m, None),
    "intel": lambda m: _kto(m, "question"),
    "prompt_pairs": lambda m: _kto(m, "prompt"),
    "ultra": lambda m: _kto(m, "prompt"),
}


# ---------------------------------------------------------------- user_defined.default
def user_defined_dpo(spec: Any) -> Transform:
    field_prompt = spec.field_prompt or "prompt"
    field_system = spec.field_system or "system"
    field_chosen = spec.field_chosen or "chosen"
    field_rejected = spec.field_rejected or "rejected"
    prompt_format = spec.prompt_format or "{prompt}"
    chosen_format = spec.chosen_format or "{chosen}"
    rejected_format = spec.rejected_format or "{rejected}"

    def transform(row: Mapping[str, Any]) -> dict[str, Any]:
        values = {"prompt": need(row, field_prompt)}
        if "{system}" in prompt_format:
            values["system"] = row.get(field_system) or ""
        return {"prompt": _format(prompt_format, values, "prompt_format"),
                "chosen": _format(chosen_format, {"chosen": need(row, field_chosen)}, "chosen_format"),
                "rejected": _format(rejected_format, {"rejected": need(row, field_rejected)}, "rejected_format")}

    return transform


def user_defined_kto(spec: Any) -> Transform:
    field_prompt = spec.field_prompt or "prompt"
    field_system = spec.field_system or "system"
    field_completion = spec.field_completion or "completion"
    field_label = spec.field_label or "label"
    prompt_format = spec.prompt_format or "{prompt}"
    completion_format = spec.completion_format or "{completion}"

    def transform(row: Mapping[str, Any]) -> dict[str, Any]:
        values = {"prompt": need(row, field_prompt)}
        if "{system}" in prompt_format and row.get(field_system):
            values["system"] = row[field_system]
        elif "{system}" in prompt_format:
            # Axolotl formats without the system value here, which fails on the placeholder; say so plainly
            raise RowError(field_system, "missing or empty, but prompt_format uses {system}")
        return {"prompt": _format(prompt_format, values, "prompt_format"),
                "completion": _format(completion_format, {"completion": need(row, field_completion)},
                                      "completion_format"),
                "label": need(row, field_label)}

    return transform


def _format(template: str, values: dict[str, Any], key: str) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError) as exc:
        raise RowError(key, f"placeholder {exc} has no value (use {{{', '.join(values)}}})") from None


# ---------------------------------------------------------------- zephyr (DPO)
def zephyr_nectar(row: Mapping[str, Any]) -> dict[str, Any]:
    """Nectar rows (``prompt`` + ranked ``answers``) in Zephyr's markup. As in Axolotl, answers are sorted by
    ``rank`` ascending and the last two become chosen / rejected (so the highest rank number is chosen)."""
    answers = need(row, "answers")
    try:
        ranked = sorted(answers, key=lambda a: a["rank"])
        chosen, rejected = ranked[-1]["answer"], ranked[-2]["answer"]
    except (KeyError, TypeError, IndexError):
        raise RowError("answers", "expected at least two {answer, rank} objects") from None
    return {"prompt": f"<|system|>\n</s>\n<|user|>\n{need(row, 'prompt')}</s>\n<|assistant|>\n",
            "chosen": chosen, "rejected": rejected}
