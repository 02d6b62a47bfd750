"""``type: chat_template`` (and legacy ``sharegpt`` shapes): conversations rendered by a jinja chat template.

The conversation is rendered and tokenized once; each turn that trains is located by rendering the conversation
again with that turn's content replaced by a placeholder and diffing the two texts (twice, with placeholders
that share no edge characters, so a template that glues a character onto the content cannot hide it). Character
spans map to tokens through the tokenizer's offsets. EOS/EOT tokens right after a turn (within 3 tokens) are
trained per ``train_on_eos`` / ``train_on_eot``. This is Axolotl's algorithm, so labels match it token for token.
"""

from __future__ import annotations

import json
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.data import template_vars
from mudpuppy.runtime.data.rows import IGNORE_INDEX, Row, RowError

DEFAULT_ROLES = {"human": "user", "user": "user", "assistant": "assistant", "gpt": "assistant",
                 "system": "system", "tool": "tool"}
SENTINELS = ("[[dummy_message]]", "zzdummymessagezz")
THINKING_PAIRS = (("<think>", "</think>"), ("<reasoning>", "</reasoning>"),
                  ("<|begin_of_thought|>", "<|end_of_thought|>"))
SOLUTION_PAIR = ("<|begin_of_solution|>", "<|end_of_solution|>")


def strip_nulls(obj: Any) -> Any:
    """Arrow fills keys missing from some rows with null; drop them so templates see the row as written."""
    if isinstance(obj, Mapping):
        return {k: strip_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [strip_nulls(v) for v in obj]
    return obj


@dataclass
class ChatOptions:
    template: str
    field_messages: str = "messages"
    field_system: str = "system"
    field_tools: str = "tools"
    mappings: dict[str, str] = field(default_factory=lambda: {"role": "role", "content": "content"})
    roles: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ROLES))
    roles_to_train: list[str] = field(default_factory=lambda: ["assistant"])
    train_on_inputs: bool = False
    train_on_eos: str = "turn"
    train_on_eot: str | None = None
    eot_tokens: list[str] | None = None
    message_field_training: str | None = None
    message_field_training_detail: str | None = None
    thinking_key: str = "reasoning_content"
    split_thinking: bool = False
    drop_system_message: bool = False
    template_kwargs: dict[str, Any] = field(default_factory=dict)


class ChatStrategy:
    name = "chat_template"
    batched = False

    def __init__(self, tokenizer: Any, opts: ChatOptions) -> None:
        self.tok = tokenizer
        self.o = opts
        self.roles_to_train = [opts.roles.get(r, r) for r in opts.roles_to_train]
        self.train_on_eos = opts.train_on_eos
        self.train_on_eot = opts.train_on_eot if opts.train_on_eot is not None else opts.train_on_eos
        self.msg_vars = template_vars.message_vars(opts.template, opts.field_messages)
        self.mistral = "mistral" in str(getattr(tokenizer, "name_or_path", "")).lower()
        self.fast = bool(getattr(tokenizer, "is_fast", False))
        eos = tokenizer.eos_token
        eot = list(opts.eot_tokens) if opts.eot_tokens is not None else ([eos] if eos is not None else [])
        if not (len(eot) == 1 and eot[0] == eos):
            eot = [t for t in eot if t in opts.template]
            for token in eot:
                ids = tokenizer.encode(token, add_special_tokens=False)
                if len(ids) != 1:
                    raise UserError(
                        f"eot_tokens: {token!r} encodes to {len(ids)} tokens {ids}",
                        hint="add it under `tokens:` or override an unused added token with added_tokens_overrides",
                    )
            if eos in eot and self.train_on_eos != self.train_on_eot:
                raise UserError(
                    f"train_on_eos ({self.train_on_eos}) and train_on_eot ({self.train_on_eot}) disagree while "
                    f"eos_token {eos!r} is one of eot_tokens", hint="set them to the same value")
        self.eot_ids = set()
        for token in eot:
            ids = tokenizer.encode(token, add_special_tokens=False)
            if len(ids) == 1:
                self.eot_ids.add(ids[0])
        self.eos_id = tokenizer.eos_token_id

    # ---- conversation assembly -------------------------------------------------------------------------
    def conversation(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        o = self.o
        messages = row.get(o.field_messages)
        if messages is None:
            raise RowError(o.field_messages, "missing (set field_messages to the column holding the turns)")
        if isinstance(messages, str):
            try:
                messages = json.loads(messages)
            except json.JSONDecodeError as exc:
                raise RowError(o.field_messages, f"not valid JSON: {exc}") from None
        if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
            raise RowError(o.field_messages, "must be a list of message objects")
        if not messages:
            raise RowError(o.field_messages, "is empty")
        turns: list[dict[str, Any]] = []
        first = self.transform(messages[0], 0)
        if first.get("role") != "system" and o.field_system in row:
            turns.append({"role": "system", "content": row[o.field_system]})
        for k, message in enumerate(messages):
            turn = self.transform(message, k)
            if o.message_field_training and message.get(o.message_field_training) is not None:
                turn["training"] = message[o.message_field_training]
            if o.message_field_training_detail and message.get(o.message_field_training_detail) is not None:
                turn["training_detail"] = message[o.message_field_training_detail]
            parts = content_parts(turn.get("content"))
            if parts is not None:
                turn["content"], detail = parts
                if detail is not None:
                    turn["training_detail"] = detail
            if o.thinking_key in turn:
                parts = content_parts(turn[o.thinking_key])
                if parts is not None:
                    turn[o.thinking_key], detail = parts
                    if detail is not None:
                        turn["reasoning_training_detail"] = detail
            turns.append(turn)
        if o.drop_system_message and turns and turns[0].get("role") == "system":
            turns = turns[1:]
        return turns

    def transform(self, message: Mapping[str, Any], index: int) -> dict[str, Any]:
        o = self.o
        out: dict[str, Any] = {}
        for key, source in o.mappings.items():
            if message.get(source) is not None:
                out[key] = message[source]
        if "role" not in out:
            raise RowError(f"{o.field_messages}[{index}].{o.mappings.get('role', 'role')}", "missing")
        out["role"] = o.roles.get(out["role"], out["role"])
        if o.split_thinking and out["role"] == "assistant" and isinstance(out.get("content"), str):
            split_reasoning(out, o.thinking_key)
        mapped = set(o.mappings.values())
        for key in self.msg_vars:
            if key in message and key not in mapped and message[key] is not None:
                out[key] = message[key]
        for k, call in enumerate(out.get("tool_calls") or []):
            fn = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                try:
                    fn["arguments"] = json.loads(fn["arguments"])
                except json.JSONDecodeError as exc:
                    raise RowError(f"{o.field_messages}[{index}].tool_calls[{k}].function.arguments",
                                   f"not valid JSON ({exc})") from None
        return out

    def tools(self, row: Mapping[str, Any]) -> list[Any] | None:
        name = self.o.field_tools
        tools = row.get(name)
        if tools is None:
            return None
        if isinstance(tools, str):
            try:
                tools = json.loads(tools)
            except json.JSONDecodeError as exc:
                raise RowError(name, f"not valid JSON ({exc})") from None
        if not isinstance(tools, list):
            raise RowError(name, f"must be a list of tool definitions, got {type(tools).__name__}")
        for k, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("parameters"), str):
                try:
                    fn["parameters"] = json.loads(fn["parameters"])
                except json.JSONDecodeError as exc:
                    raise RowError(f"{name}[{k}].function.parameters", f"not valid JSON ({exc})") from None
        return tools

    # ---- rendering ---------------------------------------------------------------------------------------
    def render(self, turns: list[dict[str, Any]], tools: list[Any] | None, **extra: Any) -> str:
        kwargs: dict[str, Any] = {"chat_template": self.o.template, "add_generation_prompt": False,
                                  **self.o.template_kwargs, **extra}
        if tools:
            kwargs["tools"] = tools
        try:
            text = self.tok.apply_chat_template(turns, tokenize=False, **kwargs)
        except Exception as exc:  # jinja raise_exception / TemplateError: the row does not fit the template
            raise RowError(self.o.field_messages, f"chat template failed: {exc}") from None
        return str(text)

    # ---- tokenization ------------------------------------------------------------------------------------
    def tokenize_rows(self, rows: list[Mapping[str, Any]]) -> list[list[Row] | RowError]:
        out: list[list[Row] | RowError] = []
        for row in rows:
            try:
                out.append([self.tokenize_one(strip_nulls(row))])
            except RowError as exc:
                out.append(exc)
        return out

    def tokenize_one(self, row: Mapping[str, Any]) -> Row:
        turns = self.conversation(row)
        tools = self.tools(row)
        text = self.render(turns, tools)
        if self.fast:
            enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
            input_ids = list(enc["input_ids"])
            locator: tuple[str, list[int], list[int]] | None = (
                text, [s for s, _ in enc["offset_mapping"]], [e for _, e in enc["offset_mapping"]])
        else:
            input_ids = list(self.tok(text, add_special_tokens=False)["input_ids"])
            locator = None
        labels = [IGNORE_INDEX] * len(input_ids)
        last_eos = last_eot = -1
        key = self.o.thinking_key
        for index, turn in enumerate(turns):
            detail = turn.get("training_detail")
            r_detail = turn.get("reasoning_training_detail")
            if turn.get("training") is not None:
                train = bool(turn["training"])
            elif detail is not None or r_detail is not None:
                train = bool(detail) or bool(r_detail)
            else:
                train = self.o.train_on_inputs or turn.get("role") in self.roles_to_train
            if not train and self.train_on_eos != "all" and self.train_on_eot != "all":
                continue
            has_reasoning = turn.get(key) is not None
            content_only = bool((detail or r_detail) and has_reasoning)
            start, end = self.find_turn(turns, index, tools, locator, content_only=content_only)
            if train and start != -1 and end != -1:
                if detail:
                    content = turn.get("content")
                    if not isinstance(content, str):
                        raise RowError(self.o.message_field_training_detail or "content",
                                       "training detail needs string content")
                    for i, off in enumerate(self.detail_offsets(content, detail)):
                        if off != IGNORE_INDEX and start + i < len(input_ids):
                            labels[start + i] = input_ids[start + i]
                elif not r_detail:
                    labels[start:end] = input_ids[start:end]
            if train and r_detail and has_reasoning:
                reasoning = turn[key]
                if not isinstance(reasoning, str):
                    raise RowError(key, "reasoning training detail needs string reasoning content")
                r_start, r_end = self.find_turn(turns, index, tools, locator, reasoning_only=True)
                if r_start != -1 and r_end != -1:
                    for i, off in enumerate(self.detail_offsets(reasoning, r_detail)):
                        if off != IGNORE_INDEX and r_start + i < len(input_ids):
                            labels[r_start + i] = input_ids[r_start + i]
            for kind, ids, option in (("eot", self.eot_ids, self.train_on_eot),
                                      ("eos", {self.eos_id}, self.train_on_eos)):
                idx = _first_in(input_ids, end, ids)
                if idx != -1 and abs(idx - end) <= 3:
                    if kind == "eot":
                        last_eot = idx
                    else:
                        last_eos = idx
                    if option == "all" or (option == "turn" and train):
                        labels[idx] = input_ids[idx]
        for idx, option in ((last_eot, self.train_on_eot), (last_eos, self.train_on_eos)):
            if option == "last" and idx != -1:
                labels[idx] = input_ids[idx]
        return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}

    # ---- turn location -------------------------------------------------------------------------------------
    def dummy(self, turn: dict[str, Any], sentinel: str, content_only: bool, reasoning_only: bool) -> dict[str, Any]:
        key = self.o.thinking_key
        if reasoning_only:
            d = {"role": turn.get("role"), "content": turn.get("content", "")}
            if key in turn:
                d[key] = sentinel
            return d
        d = {"role": turn.get("role"), "content": sentinel}
        if content_only and key in turn:
            d[key] = turn[key]
        return d

    def find_turn(self, turns: list[dict[str, Any]], index: int, tools: list[Any] | None,
                  locator: tuple[str, list[int], list[int]] | None, content_only: bool = False,
                  reasoning_only: bool = False) -> tuple[int, int]:
        if index == 0 and turns[0].get("role") == "system" and self.mistral:
            return -1, -1
        span = None
        if locator is not None:
            span = self._span_from_text(turns, index, tools, locator, content_only, reasoning_only)
        if span is None:
            span = self._span_from_tokens(turns, index, tools, content_only, reasoning_only)
        if span is None:
            return -1, -1
        start, end = span
        if start == -1 or end == -1 or end <= start:
            return -1, -1
        return start, end

    def _span_from_text(self, turns: list[dict[str, Any]], index: int, tools: list[Any] | None,
                        locator: tuple[str, list[int], list[int]], content_only: bool,
                        reasoning_only: bool) -> tuple[int, int] | None:
        full, starts, ends = locator
        lo, hi = len(full) + 1, -1
        for sentinel in SENTINELS:
            changed = [*turns[:index], self.dummy(turns[index], sentinel, content_only, reasoning_only),
                       *turns[index + 1:]]
            other = self.render(changed, tools)
            if not other:
                return None
            a, b = diff_span(full, other)
            lo, hi = min(lo, a), max(hi, b)
        if hi <= lo:
            return -1, -1
        start = bisect_right(ends, lo)
        end = bisect_left(starts, hi)
        if start >= len(ends) or end > len(ends):
            return None
        return start, end

    def _span_from_tokens(self, turns: list[dict[str, Any]], index: int, tools: list[Any] | None,
                          content_only: bool, reasoning_only: bool) -> tuple[int, int] | None:
        """Slow-tokenizer path: diff token ids of the prefix rendered with and without the placeholder."""
        last = len(turns) - 1
        extra = {"real_last_index": last} if last else {}
        dummy = self.dummy(turns[index], SENTINELS[0], content_only, reasoning_only)
        d_ids = self.tok(self.render([*turns[:index], dummy], tools, **extra), add_special_tokens=False)["input_ids"]
        f_ids = self.tok(self.render(turns[: index + 1], tools, **extra), add_special_tokens=False)["input_ids"]
        if not d_ids or not f_ids:
            return None
        n = min(len(d_ids), len(f_ids))
        start = next((i for i in range(n) if d_ids[i] != f_ids[i]), None)
        if start is None:
            return None
        end = next((len(f_ids) - i for i in range(n) if d_ids[len(d_ids) - 1 - i] != f_ids[len(f_ids) - 1 - i]),
                   None)
        if end is None:
            return None
        return start, end

    def detail_offsets(self, text: str, details: list[dict[str, Any]]) -> list[int]:
        """Per token of ``text`` alone: its start offset when the token lies wholly in a trained detail span."""
        enc = self.tok(text, return_offsets_mapping=True, add_special_tokens=False)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        if not offsets:
            return []
        for i in range(len(offsets) - 1):
            offsets[i] = (offsets[i][0], offsets[i + 1][0] - 1)
        offsets[-1] = (offsets[-1][0], len(text) - 1)
        result = [IGNORE_INDEX] * len(offsets)
        adjusted = []
        for d in details:
            try:
                begin, stop, train = int(d["begin_offset"]), int(d["end_offset"]), d["train"]
            except (KeyError, TypeError, ValueError):
                raise RowError(self.o.message_field_training_detail or "training_detail",
                               "each entry needs begin_offset, end_offset and train") from None
            first = next((i for i, (s, _) in enumerate(offsets) if s >= begin), len(offsets))
            if first > 0 and offsets[first - 1][1] > begin:
                first -= 1
            last = next((i for i in range(len(offsets) - 1, -1, -1) if offsets[i][1] <= stop), -1)
            if last < len(offsets) - 1 and offsets[last + 1][0] < stop:
                last += 1
            if first <= last:
                adjusted.append((offsets[first][0], offsets[last][1], train))
        for idx, (s, e) in enumerate(offsets):
            for begin, stop, train in adjusted:
                if s >= begin and e <= stop and train:
                    result[idx] = s
        return result


def _first_in(ids: list[int], start: int, wanted: set[int]) -> int:
    # A turn that was not found has end == -1; scanning from -1 looks at the last token first, as Axolotl does.
    for i in range(start, len(ids)):
        if ids[i] in wanted:
            return i
    return -1


def diff_span(full: str, other: str) -> tuple[int, int]:
    """[start, end) of ``full`` that differs from ``other``; the suffix scan never crosses the prefix."""
    limit = min(len(full), len(other))
    start = _common_prefix(full, other, limit)
    suffix = _common_prefix(full[::-1], other[::-1], limit - start)
    return start, len(full) - suffix


def _common_prefix(a: str, b: str, limit: int) -> int:
    lo, hi = 0, limit
    if a[:limit] == b[:limit]:
        return limit
    while lo < hi:  # binary search on slice equality keeps the comparison in C
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def content_parts(content: Any) -> tuple[str, list[dict[str, Any]] | None] | None:
    """List-of-parts content -> (joined text, per-part training details when any part sets train/weight)."""
    if not isinstance(content, list):
        return None
    texts: list[str] = []
    details: list[dict[str, Any]] = []
    explicit = False
    offset = 0
    for part in content:
        if not isinstance(part, Mapping):
            continue
        text = part.get("text") or part.get("content") or part.get("value") or ""
        texts.append(text)
        if part.get("train") is not None or part.get("weight") is not None:
            explicit = True
            train = part["train"] if part.get("train") is not None else part.get("weight") not in (0, 0.0)
        else:
            train = True
        if text:
            details.append({"begin_offset": offset, "end_offset": offset + len(text) - 1, "train": train})
            offset += len(text)
    return "".join(texts), (details if explicit else None)


def split_reasoning(message: dict[str, Any], key: str) -> None:
    content = message["content"]
    for open_tag, close_tag in THINKING_PAIRS:
        if open_tag in content and close_tag in content:
            a, b = content.find(open_tag), content.find(close_tag)
            message[key] = content[a + len(open_tag): b].strip()
            rest = content[b + len(close_tag):].lstrip()
            s_open, s_close = SOLUTION_PAIR
            if s_open in rest and s_close in rest:
                rest = rest[rest.find(s_open) + len(s_open): rest.find(s_close)].strip()
            message["content"] = rest
            return
