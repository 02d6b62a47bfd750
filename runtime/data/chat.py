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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.data import template_vars
from mudpuppy.runtime.data.encode import encode_offsets
from mudpuppy.runtime.data.rows import IGNORE_INDEX, Row, RowError

DEFAULT_ROLES = {"human": "user", "user": "user", "assistant": "assistant", "gpt": "assistant",
                 "system": "system", "tool": "tool"}
SENTINELS = ("[[dummy_message]]", "zzdummymessagezz")
THINKING_PAIRS = (("<think>", "</think>"), ("<reasoning>", "</reasoning>"),
                  ("<|begin_of_thought|>", "<|end_of_thought|>"))
SOLUTION_PAIR = ("<|begin_of_solution|>", "<|end_of_solution|>")
# A rendered conversation and its tokens' (start, end) character offsets.
Locator = tuple[str, Sequence[tuple[int, int]]]
_START, _END = itemgetter(0), itemgetter(1)


_SCALARS = frozenset({str, int, float, bool})


def strip_nulls(obj: Any) -> Any:
    """Arrow fills keys missing from some rows with null; drop them so templates see the row as written."""
    if isinstance(obj, Mapping):  # scalars are kept without a call per value
        return {k: v if type(v) in _SCALARS else strip_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [v if type(v) in _SCALARS else strip_nulls(v) for v in obj]
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
        self.composite = True  # locate turns from one render per placeholder kind when the template allows
        self.direct = DirectRenderer.build(tokenizer, opts.template, opts.template_kwargs)
        self.direct_checked = False

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

    def render_fast(self, turns: list[dict[str, Any]], tools: list[Any] | None) -> str:
        """``render`` through the compiled template, messages converted once per row (see ``DirectRenderer``)."""
        if self.direct is None or not turns or not self.direct.takes(tools):
            return self.render(turns, tools)
        try:
            return self.direct.render(turns, tools)
        except Exception as exc:  # same failures apply_chat_template reports, same message
            raise RowError(self.o.field_messages, f"chat template failed: {exc}") from None

    # ---- tokenization ------------------------------------------------------------------------------------
    def tokenize_rows(self, rows: list[Mapping[str, Any]]) -> list[list[Row] | RowError]:
        """Render every row, tokenize the batch in one fast-tokenizer call, then label each row."""
        rendered: list[tuple[list[dict[str, Any]], list[Any] | None, str] | RowError] = []
        for row in rows:
            try:
                rendered.append(self._rendered(strip_nulls(row)))
            except RowError as exc:
                rendered.append(exc)
        texts = [r[2] for r in rendered if not isinstance(r, RowError)]
        encoded = iter(self._encode(texts))
        out: list[list[Row] | RowError] = []
        for item in rendered:
            if isinstance(item, RowError):
                out.append(item)
                continue
            turns, tools, text = item
            input_ids, locator = next(encoded)
            try:
                out.append([self.label(turns, tools, text, input_ids, locator)])
            except RowError as exc:
                out.append(exc)
        return out

    def tokenize_one(self, row: Mapping[str, Any]) -> Row:
        turns, tools, text = self._rendered(row)
        [(input_ids, locator)] = self._encode([text])
        return self.label(turns, tools, text, input_ids, locator)

    def _rendered(self, row: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[Any] | None, str]:
        if self.direct is not None:
            self.direct.new_row()
        turns = self.conversation(row)
        tools = self.tools(row)
        if self.direct is not None and not self.direct_checked:
            self.check_direct(turns, tools)
        return turns, tools, self.render_fast(turns, tools)

    def check_direct(self, turns: list[dict[str, Any]], tools: list[Any] | None) -> None:
        """The first row renders both ways; any difference (another transformers release) turns the shortcut off."""
        self.direct_checked = True
        try:
            same = self.render_fast(turns, tools) == self.render(turns, tools)
        except RowError:
            same = False
        if not same:
            self.direct = None

    def _encode(self, texts: list[str]) -> list[tuple[list[int], Locator | None]]:
        if not texts:
            return []
        if not self.fast:
            enc = self.tok(texts, add_special_tokens=False)["input_ids"]
            return [(list(ids), None) for ids in enc]
        return [(ids, (text, offsets)) for text, (ids, offsets) in zip(texts, encode_offsets(self.tok, texts),
                                                                       strict=True)]

    def trains(self, turn: Mapping[str, Any]) -> bool:
        if turn.get("training") is not None:
            return bool(turn["training"])
        detail, r_detail = turn.get("training_detail"), turn.get("reasoning_training_detail")
        if detail is not None or r_detail is not None:
            return bool(detail) or bool(r_detail)
        return bool(self.o.train_on_inputs or turn.get("role") in self.roles_to_train)

    def label(self, turns: list[dict[str, Any]], tools: list[Any] | None, text: str, input_ids: list[int],
              locator: Locator | None) -> Row:
        labels = [IGNORE_INDEX] * len(input_ids)
        last_eos = last_eot = -1
        key = self.o.thinking_key
        every = self.train_on_eos == "all" or self.train_on_eot == "all"
        plan = [(index, turn, self.trains(turn)) for index, turn in enumerate(turns)]
        plan = [(index, turn, train) for index, turn, train in plan if train or every]
        others = self.composite_others(turns, tools, text, plan) if locator is not None else {}
        for index, turn, train in plan:
            detail = turn.get("training_detail")
            r_detail = turn.get("reasoning_training_detail")
            has_reasoning = turn.get(key) is not None
            content_only = bool((detail or r_detail) and has_reasoning)
            start, end = self.find_turn(turns, index, tools, locator, content_only=content_only,
                                        others=others.get(index))
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

    def composite_others(self, turns: list[dict[str, Any]], tools: list[Any] | None, full: str,
                         plan: list[tuple[int, dict[str, Any], bool]]) -> dict[int, tuple[int, int]]:
        """Per turn to locate: where its content sits in ``full`` (start, size), so that the texts Axolotl's
        per-turn placeholder renders would give are ``full`` with that span swapped for a placeholder; found
        from one render per placeholder kind with every such turn replaced at once (each by its own numbered
        placeholder).

        Used only when that render proves the template places each content verbatim and independently: cutting
        the numbered placeholders out of it and putting the contents back must give exactly the full text. Then
        the per-turn render is the full text with that one content swapped for the placeholder, which is what
        is built here; otherwise (or when the template fails) the caller renders turn by turn as before.
        """
        wanted = [index for index, turn, _ in plan
                  if not (turn.get("training_detail") or turn.get("reasoning_training_detail"))
                  and isinstance(turn.get("content"), str)
                  and not (index == 0 and turns[0].get("role") == "system" and self.mistral)]
        if len(wanted) < 2 or not self.composite:
            return {}
        where: dict[int, int] | None = None
        for family in SENTINELS:
            marks = {index: _numbered(family, n) for n, index in enumerate(wanted)}
            changed = list(turns)
            for index, mark in marks.items():
                changed[index] = self.dummy(turns[index], mark, False, False)
            try:
                text = self.render_fast(changed, tools)
            except RowError:
                return {}
            found = _compose(text, full, {index: (marks[index], turns[index]["content"]) for index in wanted})
            if found is None or (where is not None and found != where):
                return {}
            where = found
        assert where is not None
        return {index: (at, len(turns[index]["content"])) for index, at in where.items()}

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
                  locator: Locator | None, content_only: bool = False,
                  reasoning_only: bool = False, others: tuple[str, ...] | None = None) -> tuple[int, int]:
        if index == 0 and turns[0].get("role") == "system" and self.mistral:
            return -1, -1
        span = None
        if locator is not None:
            span = self._span_from_text(turns, index, tools, locator, content_only, reasoning_only, others)
        if span is None:
            span = self._span_from_tokens(turns, index, tools, content_only, reasoning_only)
        if span is None:
            return -1, -1
        start, end = span
        if start == -1 or end == -1 or end <= start:
            return -1, -1
        return start, end

    def _span_from_text(self, turns: list[dict[str, Any]], index: int, tools: list[Any] | None,
                        locator: Locator, content_only: bool,
                        reasoning_only: bool, others: tuple[int, int] | None = None) -> tuple[int, int] | None:
        full, offsets = locator
        lo, hi = len(full) + 1, -1
        for sentinel in SENTINELS:
            if others is not None:  # the placeholder render is ``full`` with the content's span swapped
                a, b = splice_diff(full, others[0], others[1], sentinel)
            else:
                changed = [*turns[:index], self.dummy(turns[index], sentinel, content_only, reasoning_only),
                           *turns[index + 1:]]
                other = self.render_fast(changed, tools)
                if not other:
                    return None
                a, b = diff_span(full, other)
            lo, hi = min(lo, a), max(hi, b)
        if hi <= lo:
            return -1, -1
        start = bisect_right(offsets, lo, key=_END)  # the same comparisons as over the list of token ends
        end = bisect_left(offsets, hi, key=_START)
        if start >= len(offsets) or end > len(offsets):
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


class DirectRenderer:
    """What ``apply_chat_template(tokenize=False)`` renders, without its per-call copying of every message.

    transformers converts the whole conversation (to plain dicts, None values dropped, reasoning fields aliased)
    on every call; locating turns renders each conversation several times with one message swapped. Here each
    message is converted once per row with transformers' own per-message helpers and the compiled template is
    called as transformers calls it. ``ChatStrategy.check_direct`` compares it with ``apply_chat_template`` on
    the first row and drops it on any difference.
    """

    RESERVED = frozenset({"tools", "documents", "chat_template", "tokenize", "continue_final_message",
                          "return_dict", "return_assistant_tokens_mask", "sanitize_control_tokens", "padding",
                          "truncation", "max_length", "return_tensors", "tokenizer_kwargs", "conversation"})

    def __init__(self, template: str, kwargs: dict[str, Any], generation_prompt: Any) -> None:
        from transformers.utils import chat_template_utils as helpers

        self.template = template
        self.u = helpers
        self.compiled = helpers._compile_jinja_template(template)
        # Template.render merges the template's globals (a ChainMap) into every call's variables and the Context
        # lists their names, two Python-level walks of the map per render; done once here, each render gets the
        # same variables and names (a shared context, as new_context(shared=True) would build it).
        self.globals = dict(self.compiled.globals)
        self.globals_keys = frozenset(self.compiled.globals)
        if self.compiled.environment.is_async:
            raise TypeError("an async jinja environment renders through Template.render")
        self.kwargs = kwargs
        self.generation_prompt = generation_prompt
        self.memo: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        fields = getattr(helpers, "_REASONING_FIELDS", None)
        self.plain_keys = frozenset(fields) if isinstance(fields, tuple) else None

    def __reduce__(self) -> tuple[Any, ...]:  # datasets' worker processes get a copy; the compiled form is rebuilt
        return DirectRenderer, (self.template, self.kwargs, self.generation_prompt)

    @classmethod
    def build(cls, tokenizer: Any, template: str, template_kwargs: dict[str, Any]) -> DirectRenderer | None:
        if cls.RESERVED & set(template_kwargs) or not callable(getattr(tokenizer, "apply_chat_template", None)):
            return None
        try:
            from transformers.utils import chat_template_utils as u

            for name in ("_compile_jinja_template", "_normalize_chat_messages", "_plain_template_data",
                         "_alias_reasoning_fields"):
                getattr(u, name)
            kwargs = {**tokenizer.special_tokens_map, "add_generation_prompt": False, **template_kwargs}
            generation_prompt = kwargs.pop("add_generation_prompt")
            return cls(template, u._plain_template_data(kwargs), generation_prompt)
        except Exception:  # another transformers release: keep apply_chat_template
            return None

    def new_row(self) -> None:
        self.memo.clear()

    @staticmethod
    def takes(tools: list[Any] | None) -> bool:
        return tools is None or all(isinstance(t, dict) for t in tools)

    def message(self, turn: dict[str, Any]) -> dict[str, Any]:
        hit = self.memo.get(id(turn))
        if hit is not None and hit[0] is turn:
            return hit[1]
        u = self.u
        plain = self.plain_keys is not None and self.plain_keys.isdisjoint(turn)
        if plain:
            for k, v in turn.items():
                if type(k) is not str or type(v) is not str:
                    plain = False
                    break
        if plain:
            converted = dict(turn)  # text only, no reasoning: each helper returns such a message unchanged
            self.memo[id(turn)] = (turn, converted)
            return converted
        [converted] = u._alias_reasoning_fields(u._plain_template_data(u._normalize_chat_messages([turn])))
        self.memo[id(turn)] = (turn, converted)
        return converted

    def render(self, turns: list[dict[str, Any]], tools: list[Any] | None) -> str:
        memo = self.memo
        messages = []
        for turn in turns:  # memo hits inline: every conversation renders 3+ times with mostly the same turns
            hit = memo.get(id(turn))
            messages.append(hit[1] if hit is not None and hit[0] is turn else self.message(turn))
        schemas = self.u._plain_template_data(tools) if tools else None
        compiled = self.compiled
        env = compiled.environment
        context = env.context_class(env, {**self.globals, "messages": messages, "tools": schemas, "documents": None,
                                          "add_generation_prompt": self.generation_prompt, **self.kwargs},
                                    compiled.name, compiled.blocks)
        context.globals_keys = self.globals_keys  # type: ignore[assignment]
        try:
            return str(compiled.environment.concat(compiled.root_render_func(context)))  # type: ignore[attr-defined]
        except Exception:
            compiled.environment.handle_exception()  # re-raises it as Template.render does
            raise


def _numbered(sentinel: str, n: int) -> str:
    """A placeholder of the same kind (same first and last two characters), told apart by a number."""
    return f"{sentinel[:-2]}{n}{sentinel[-2:]}"


def _compose(text: str, full: str, items: dict[int, tuple[str, str]]) -> dict[int, int] | None:
    """Where each content sits in ``full`` when ``text`` with its placeholders put back as contents is ``full``."""
    spots = []
    for index, (mark, content) in items.items():
        at = text.find(mark)
        if at == -1 or text.find(mark, at + 1) != -1:
            return None
        spots.append((at, index, mark, content))
    spots.sort()
    pieces: list[str] = []
    where: dict[int, int] = {}
    cursor = length = 0
    for at, index, mark, content in spots:
        if at < cursor:
            return None
        pieces.append(text[cursor:at])
        length += at - cursor
        where[index] = length
        pieces.append(content)
        length += len(content)
        cursor = at + len(mark)
    pieces.append(text[cursor:])
    return where if "".join(pieces) == full else None


def _first_in(ids: list[int], start: int, wanted: set[int], within: int = 3) -> int:
    """First index from ``start`` whose id is in ``wanted``, when it is at most ``within`` past ``start``; else -1.

    The caller only takes a token within 3 of the turn's end, so the scan stops there: a first match further
    on was rejected anyway. A turn that was not found has end == -1; scanning from -1 looks at the last token
    first, as Axolotl does."""
    for i in range(start, min(len(ids), start + within + 1)):
        if ids[i] in wanted:
            return i
    return -1


def diff_span(full: str, other: str) -> tuple[int, int]:
    """[start, end) of ``full`` that differs from ``other``; the suffix scan never crosses the prefix."""
    limit = min(len(full), len(other))
    start = _common_prefix(full, other, limit)
    suffix = _common_prefix(full[::-1], other[::-1], limit - start)
    return start, len(full) - suffix


def splice_diff(full: str, at: int, size: int, mark: str, budget: int = 64) -> tuple[int, int]:
    """``diff_span(full, full[:at] + mark + full[at + size:])`` without building that text: the two agree
    before ``at`` and after the swapped span, so only the characters around its edges are compared (up to
    ``budget`` of them per edge; past that, the plain ``diff_span``)."""
    tail = at + size
    n_mark = len(mark)
    n_full = len(full)
    n_other = n_full - size + n_mark
    limit = min(n_full, n_other)

    def other_at(x: int) -> str:
        if x < at:
            return full[x]
        if x < at + n_mark:
            return mark[x - at]
        return full[tail + x - at - n_mark]

    start = at  # everything before the span is shared
    while start < limit and full[start] == other_at(start):
        start += 1
        if start - at > budget:
            return diff_span(full, full[:at] + mark + full[tail:])
    cap = limit - start
    suffix = min(n_full - tail, cap)  # everything after the span is shared
    if suffix == n_full - tail:
        shared = suffix
        while suffix < cap and full[n_full - 1 - suffix] == other_at(n_other - 1 - suffix):
            suffix += 1
            if suffix - shared > budget:
                return diff_span(full, full[:at] + mark + full[tail:])
    return start, n_full - suffix


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
