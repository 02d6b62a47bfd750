"""Instruction-style strategies: alpaca and its variants, user-defined ``type:`` formats, completion, input_output.

Token layout matches Axolotl's: the prompt is tokenized on its own (with BOS, no EOS, truncated at
``sequence_len``), the response separately (BOS stripped, EOS appended when it fits), and the two are
concatenated; labels mask the prompt unless ``train_on_inputs``. Prompts and responses of a whole batch go
through the fast tokenizer in one call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.data.encode import encode_ids
from mudpuppy.runtime.data.rows import IGNORE_INDEX, Row, RowError, need, optional_text

# Alpaca prompt styles: (system_format, turn_format, turn_no_input_format)
STYLES: dict[str, tuple[str, str, str]] = {
    "instruct": (
        "{system}\n\n",
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
        "### Instruction:\n{instruction}\n\n### Response:\n",
    ),
    "chat": ("SYSTEM: {system}\n", "USER: {instruction}\n{input}\nASSISTANT:", "USER: {instruction}\nASSISTANT:"),
    "chatml": (
        "<|im_start|>system\n{system}<|im_end|>\n",
        "<|im_start|>user\n{instruction}\n{input}<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n",
    ),
    "phi": (
        "<|system|>\n{system}<|end|>\n",
        "<|user|>\n{instruction}<|end|>{input}<|assistant|>",
        "<|user|>\n{instruction}<|end|>\n<|assistant|>\n",
    ),
}
ORCA_STYLES: dict[str, tuple[str, str, str]] = {
    "instruct": (
        "### System:\n{system}\n",
        "### Human:\n{instruction}\n### Additional Context:\n{input}\n### Assistant:\n",
        "### Human:\n{instruction}\n### Assistant:\n",
    ),
    "chat": STYLES["chat"],
    "chatml": STYLES["chatml"],
}
ALPACA_SYSTEM = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request."
)
ALPACA_SYSTEM_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
CHAT_SYSTEM = (
    "Below is an instruction from a USER that describes a task, paired with an input that provides further "
    "context. The ASSISTANT writes a response that concisely and appropriately completes the request.\n\n"
)
CHAT_SYSTEM_NO_INPUT = (
    "Below is an instruction from a USER that describes a task. The ASSISTANT writes a response that "
    "appropriately and concisely completes the request.\n\n"
)
EXPLAIN_SYSTEM = "Choose the answer that best answers the question. Explain your reasoning.\n"
CONCISE_SYSTEM = "Choose the answer that best answers the question. Be concise in your response.\n\n"


@dataclass
class Prompter:
    """How instruction (+ optional input, + optional system text) becomes the prompt string."""

    system_format: str
    turn_format: str
    turn_no_input_format: str
    system: str = ""
    system_no_input: str = ""
    system_from_row: bool = False  # alpaca_w_system / user-defined: the system text comes per row

    def build(self, instruction: Any, inp: Any, system: Any = None) -> str:
        if self.system_from_row:
            head = self.system_format.format(system=system) if system and self.system_format else ""
        else:
            text = self.system if inp else self.system_no_input
            head = self.system_format.format(system=text) if text else ""
        if inp:
            return head + self.turn_format.format(instruction=instruction, input=inp)
        return head + self.turn_no_input_format.format(instruction=instruction)


def styled(style: str | None, system: str = ALPACA_SYSTEM, system_no_input: str = ALPACA_SYSTEM_NO_INPUT,
           table: Mapping[str, tuple[str, str, str]] = STYLES, system_from_row: bool = False) -> Prompter:
    style = style or "instruct"
    if style not in table:
        raise ValueError(f"unknown prompt style {style!r} (known: {', '.join(table)})")
    return Prompter(*table[style], system=system, system_no_input=system_no_input, system_from_row=system_from_row)


# Which fields a format reads: (instruction, input or None, output, system or None); a callable builds values.
FieldSpec = Callable[[Mapping[str, Any]], tuple[Any, Any, Any, Any]]


def fields(instruction: str, output: str, inp: str | None = "input", system: str | None = None) -> FieldSpec:
    def read(row: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
        sys_text = need(row, system) if system else None
        return need(row, instruction), optional_text(row, inp) if inp else "", need(row, output), sys_text

    return read


def _multiple_choice(row: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    choices = "\n".join(f'- "{c}"' for c in need(row, "choices"))
    answer = row["solution"] if row.get("solution") is not None else need(row, "explanation")
    return need(row, "question"), choices, answer, None


CONTEXT_SYSTEM = "Use the following contextual information to concisely answer the question.\n"
NOT_IN_CONTEXT = ("The context provided does not contain any information about your inquiry. "
                  "Therefore, I'm unable to answer your question based on the given context.")
ORCA_MINI = "### System:\n{system}\n\n### User:\n{instruction}\n\n### Response:\n"
# The reader builds the whole prompt; this prompter passes it through unchanged.
VERBATIM = Prompter("", "{instruction}", "{instruction}")


def _context_qa(row: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    return need(row, "article") + "\n===\n" + need(row, "question"), "", need(row, "answer"), None


def _context_qa_404(row: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    return need(row, "article") + "\n===\n" + need(row, "unanswerable_question"), "", NOT_IN_CONTEXT, None


def _context_qa_v2(row: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    prompt = "Context: " + need(row, "context") + "\nQuestion: " + need(row, "question") + "\n"
    return prompt, "", "Answer: " + need(row, "answer"), None


def _orca_mini(row: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    prompt = ORCA_MINI.format(system=need(row, "system_prompt"), instruction=need(row, "question"))
    return prompt, "", need(row, "response"), None


def _jeopardy(row: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    return need(row, "question"), need(row, "category"), "what is " + need(row, "answer"), None


@dataclass
class InstructionStrategy:
    """Prompt masked (unless train_on_inputs), response trained, EOS appended when it fits."""

    tokenizer: Any
    prompter: Prompter
    read: FieldSpec
    train_on_inputs: bool
    sequence_len: int
    name: str = "alpaca"
    eos_count: int = 1  # metharme ends responses with up to 3 EOS tokens
    batched: bool = field(default=True, init=False)

    def tokenize_rows(self, rows: list[Mapping[str, Any]]) -> list[list[Row] | RowError]:
        out: list[list[Row] | RowError] = [[] for _ in rows]
        prompts: list[str] = []
        responses: list[str] = []
        slots: list[int] = []
        for i, row in enumerate(rows):
            try:
                instruction, inp, response, system = self.read(row)
                prompts.append(self.prompter.build(instruction, inp, system))
            except RowError as exc:
                out[i] = exc
                continue
            responses.append(response if isinstance(response, str) else str(response))
            slots.append(i)
        prompt_ids = self._encode(prompts)
        response_ids = self._encode(responses)
        eos, bos = self.tokenizer.eos_token_id, self.tokenizer.bos_token_id
        for slot, p_ids, r_ids in zip(slots, prompt_ids, response_ids, strict=True):
            if r_ids:
                for _ in range(self.eos_count - (r_ids[-1] == eos)):
                    if len(r_ids) < self.sequence_len:
                        r_ids.append(eos)
                if r_ids[0] == bos:
                    r_ids = r_ids[1:]
            labels = list(p_ids) if self.train_on_inputs else [IGNORE_INDEX] * len(p_ids)
            ids = p_ids + r_ids
            out[slot] = [{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels + r_ids}]
        return out

    def _encode(self, texts: list[str]) -> list[list[int]]:
        """Batch tokenization with Axolotl's rules: empty text gives no tokens, truncation at sequence_len."""
        keep = [i for i, t in enumerate(texts) if t]
        result: list[list[int]] = [[] for _ in texts]
        if keep:
            enc = encode_ids(self.tokenizer, [texts[i] for i in keep], max_length=self.sequence_len)
            for i, ids in zip(keep, enc, strict=True):
                result[i] = ids
        return result


@dataclass
class CompletionStrategy:
    """Raw text, all tokens trained; long texts (up to 64x sequence_len) are cut into sequence_len chunks."""

    tokenizer: Any
    field_name: str
    sequence_len: int
    name: str = "completion"
    batched: bool = field(default=True, init=False)

    def tokenize_rows(self, rows: list[Mapping[str, Any]]) -> list[list[Row] | RowError]:
        out: list[list[Row] | RowError] = [[] for _ in rows]
        texts: list[str] = []
        slots: list[int] = []
        for i, row in enumerate(rows):
            try:
                text = need(row, self.field_name)
            except RowError as exc:
                out[i] = exc
                continue
            if not isinstance(text, str):
                out[i] = RowError(self.field_name, f"expected text, got {type(text).__name__}")
                continue
            if text:
                texts.append(text)
                slots.append(i)
        max_length = self.sequence_len * 64
        eos = self.tokenizer.eos_token_id
        if texts:
            enc = encode_ids(self.tokenizer, texts, max_length=max_length)
            for slot, ids in zip(slots, enc, strict=True):
                if not ids:
                    continue
                if ids[-1] != eos and len(ids) < max_length:
                    ids.append(eos)
                chunks = [ids[j: j + self.sequence_len] for j in range(0, len(ids), self.sequence_len)]
                out[slot] = [{"input_ids": c, "attention_mask": [1] * len(c), "labels": list(c)} for c in chunks]
        return out


@dataclass
class InputOutputStrategy:
    """``segments: [{text, label}]``: each segment tokenized without special tokens, trained where label."""

    tokenizer: Any
    train_on_inputs: bool
    name: str = "input_output"
    batched: bool = field(default=True, init=False)

    def tokenize_rows(self, rows: list[Mapping[str, Any]]) -> list[list[Row] | RowError]:
        out: list[list[Row] | RowError] = []
        for row in rows:
            try:
                segments = need(row, "segments")
                ids: list[int] = []
                labels: list[int] = []
                for k, seg in enumerate(segments):
                    if not isinstance(seg, Mapping) or "text" not in seg or "label" not in seg:
                        raise RowError(f"segments[{k}]", "each segment needs 'text' and 'label'")
                    piece = self.tokenizer(seg["text"], add_special_tokens=False)["input_ids"]
                    ids += piece
                    labels += piece if (seg["label"] or self.train_on_inputs) else [IGNORE_INDEX] * len(piece)
                out.append([{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}])
            except RowError as exc:
                out.append(exc)
        return out


def _user_defined(spec: Any) -> tuple[Prompter, FieldSpec]:
    def get(key: str, default: str) -> str:
        value = getattr(spec, key, None) if not isinstance(spec, Mapping) else spec.get(key)
        return default if value is None else value

    f_instruction, f_input = get("field_instruction", "instruction"), get("field_input", "input")
    f_output, f_system = get("field_output", "output"), get("field_system", "system")
    system_prompt = get("system_prompt", "")
    prompter = Prompter(get("system_format", "{system}"), get("format", "{instruction} {input} "),
                        get("no_input_format", "{instruction} "), system_from_row=True)

    def read(row: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
        system = row.get(f_system, system_prompt)
        return need(row, f_instruction), optional_text(row, f_input), optional_text(row, f_output), system

    return prompter, read


# type name -> (prompter factory(style), field reader). Names follow Axolotl (``module`` or ``module.load_x``).
def _table() -> dict[str, tuple[Callable[[str | None], Prompter], FieldSpec]]:
    alpaca = fields("instruction", "output")
    with_system = fields("instruction", "output", system="system")
    orca = fields("question", "response", inp=None, system="system_prompt")
    return {
        "alpaca": (lambda s: styled(s), alpaca),
        "alpaca_instruct": (lambda s: styled("instruct"), alpaca),
        "alpaca_instruct.load_no_prompt": (lambda s: styled("instruct", "", ""), alpaca),
        "alpaca_chat": (lambda s: styled(s or "chat"), alpaca),
        "alpaca_chat.load_concise": (lambda s: styled("chat", CHAT_SYSTEM, CHAT_SYSTEM_NO_INPUT), alpaca),
        "alpaca_chat.load_qa": (lambda s: styled("chat", CHAT_SYSTEM, CHAT_SYSTEM_NO_INPUT),
                                fields("question", "answer", inp=None)),
        "alpaca_chat.load_camel_ai": (lambda s: styled("chat", CHAT_SYSTEM, CHAT_SYSTEM_NO_INPUT),
                                      fields("message_1", "message_2", inp=None)),
        "alpaca_chat.load_no_prompt": (lambda s: styled("chat", "", ""), alpaca),
        "alpaca_w_system": (lambda s: styled("chat", system_from_row=True), with_system),
        "alpaca_w_system.load_chat": (lambda s: styled("chat", system_from_row=True), with_system),
        "alpaca_w_system.load_instruct": (lambda s: styled("instruct", system_from_row=True), with_system),
        "alpaca_w_system.load_open_orca": (
            lambda s: styled("instruct", table=ORCA_STYLES, system_from_row=True), orca),
        "alpaca_w_system.load_open_orca_chatml": (
            lambda s: styled("chatml", table=ORCA_STYLES, system_from_row=True), orca),
        "explainchoice": (lambda s: styled(s, EXPLAIN_SYSTEM, EXPLAIN_SYSTEM), _multiple_choice),
        "concisechoice": (
            lambda s: Prompter("{system}", STYLES["chat"][1], STYLES["chat"][2], CONCISE_SYSTEM, CONCISE_SYSTEM),
            _multiple_choice),
        "summarizetldr": (lambda s: Prompter(
            "{system}", "USER: Summarize the following article as a TL;DR.\n{instruction}\n{input}\nASSISTANT:",
            "USER: Summarize the following article as a TL;DR.\n{instruction}\nASSISTANT:"),
            fields("article", "summary", inp=None)),
        "jeopardy": (lambda s: styled(s), _jeopardy),
        "oasst": (lambda s: styled(s), fields("INSTRUCTION", "RESPONSE", inp=None)),
        "gpteacher": (lambda s: styled(s), fields("instruction", "response")),
        "context_qa": (lambda s: styled("chat", CONTEXT_SYSTEM, CONTEXT_SYSTEM), _context_qa),
        "context_qa.load_404": (lambda s: styled("chat", CONTEXT_SYSTEM, CONTEXT_SYSTEM), _context_qa_404),
        "context_qa.load_v2": (lambda s: Prompter("{system}", "{instruction}\n{input}", "{instruction}"),
                               _context_qa_v2),
        "orcamini": (lambda s: VERBATIM, _orca_mini),
        "metharme": (lambda s: VERBATIM, fields("prompt", "generation", inp=None)),
    }


INSTRUCTION_TYPES = _table()
ALIASES = {"alpaca_w_system.load": "alpaca_w_system", "context_qa.load": "context_qa",
           "orcamini.load": "orcamini", "metharme.load": "metharme", "alpaca_chat.load": "alpaca_chat",
           "alpaca_instruct.load": "alpaca_instruct", "alpaca_instruct.load_instruct": "alpaca_instruct"}


def instruction_strategy(type_name: str, tokenizer: Any, train_on_inputs: bool, sequence_len: int,
                         conversation: str | None = None) -> InstructionStrategy | None:
    base, _, style_text = type_name.partition(":")
    base = ALIASES.get(base, base)
    if base not in INSTRUCTION_TYPES:
        return None
    factory, read = INSTRUCTION_TYPES[base]
    style: str | None = style_text or None
    if base == "alpaca_chat":
        style = conversation or style
    try:
        prompter = factory(style)
    except ValueError as exc:
        raise UserError(f"type {type_name!r}: {exc}") from None
    return InstructionStrategy(tokenizer, prompter, read, train_on_inputs, sequence_len, name=type_name,
                               eos_count=3 if base == "metharme" else 1)


def user_defined_strategy(spec: Any, tokenizer: Any, train_on_inputs: bool, sequence_len: int) -> InstructionStrategy:
    prompter, read = _user_defined(spec)
    return InstructionStrategy(tokenizer, prompter, read, train_on_inputs, sequence_len, name="user_defined")
