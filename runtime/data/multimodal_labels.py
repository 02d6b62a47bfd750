"""Labels for multimodal batches: which tokens of a rendered conversation the loss sees.

A multimodal batch is tokenized by the processor in one go (the image placeholders are expanded there), so the
turn spans cannot come from rendering turns one by one as text chats do. Axolotl instead scans the token ids
for per-role start/end markers (``<|im_start|>assistant\\n`` ... ``<|im_end|>``) and keeps the content of the
roles that train; then padding and media placeholder tokens are masked. This module does the same, per chat
template family, so the labels equal Axolotl's token for token:

- at each position the longest matching start marker opens a span, which runs to the first end marker after it
  (or to the end of the row); the span's content trains when its role is in ``roles_to_train``;
- the end marker trains per ``train_on_eos``: ``turn`` (after trained turns), ``all`` (after every turn whose
  role keeps its end), ``none``, ``last`` (only after the last trained turn);
- a role declared with ``include_end=False`` does not consume its end marker: it is scanned again as the next
  start (Pixtral / Mistral v7's ``[/INST]`` ends a user turn and opens the assistant's);
- families without declared markers (llava, unknown templates) train on every non-pad, non-media token, which is
  what Axolotl does for them (``train_on_inputs`` is then moot).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mudpuppy.launcher.errors import UserError

IGNORE_INDEX = -100
EOS_MODES = ("turn", "all", "none", "last")


@dataclass(frozen=True)
class Boundary:
    role: str
    start: tuple[int, ...]
    end: tuple[int, ...] = ()
    include_start: bool = False
    include_end: bool = True


@dataclass
class LabelRule:
    """Everything that decides a multimodal row's labels, resolved against one tokenizer."""

    boundaries: list[Boundary]
    masked_ids: set[int] = field(default_factory=set)   # padding and media placeholders: never trained
    roles_to_train: tuple[str, ...] = ("assistant",)
    train_on_inputs: bool = False
    train_on_eos: str = "turn"

    def labels(self, input_ids: Any) -> Any:
        """``[B, L]`` labels for ``[B, L]`` input ids (a torch tensor): ids where trained, -100 elsewhere."""
        import torch

        rows = input_ids.tolist()
        keep = [self.keep_row(row) for row in rows]
        keep_t = torch.tensor(keep, dtype=torch.bool).reshape(input_ids.shape)
        if self.masked_ids:
            keep_t &= ~torch.isin(input_ids, torch.tensor(sorted(self.masked_ids), dtype=input_ids.dtype))
        return input_ids.masked_fill(~keep_t, IGNORE_INDEX)

    def keep_row(self, ids: Sequence[int]) -> list[bool]:
        n = len(ids)
        if self.train_on_inputs or not self.boundaries:
            return [True] * n
        keep = [False] * n
        trained = set(self.roles_to_train)
        last_end: tuple[int, int] | None = None
        by_length = sorted(self.boundaries, key=lambda b: -len(b.start))  # longest start wins; ties: first declared
        j = 0
        while j < n:
            match = next((b for b in by_length if b.start and _at(ids, j, b.start)), None)
            if match is None:
                j += 1
                continue
            content = j + len(match.start)
            end_at = _find(ids, content, match.end) if match.end else -1
            found = end_at >= 0
            content_end = end_at if found else n
            after = end_at + len(match.end) if found else n
            if match.role in trained:
                if match.include_start:
                    keep[j:content] = [True] * (content - j)
                keep[content:content_end] = [True] * (content_end - content)
                if found and match.include_end:
                    if self.train_on_eos in ("turn", "all"):
                        keep[content_end:after] = [True] * (after - content_end)
                    elif self.train_on_eos == "last":
                        last_end = (content_end, after)
            elif found and match.include_end and self.train_on_eos == "all":
                keep[content_end:after] = [True] * (after - content_end)
            j = content_end if (found and not match.include_end) else after
        if last_end is not None:
            keep[last_end[0]:last_end[1]] = [True] * (last_end[1] - last_end[0])
        return keep


def _at(ids: Sequence[int], pos: int, seq: Sequence[int]) -> bool:
    return pos + len(seq) <= len(ids) and all(ids[pos + k] == t for k, t in enumerate(seq))


def _find(ids: Sequence[int], start: int, seq: Sequence[int]) -> int:
    for pos in range(start, len(ids) - len(seq) + 1):
        if _at(ids, pos, seq):
            return pos
    return -1


def _encode(tokenizer: Any, text: str) -> tuple[int, ...]:
    return tuple(tokenizer.encode(text, add_special_tokens=False))


def _token_id(tokenizer: Any, token: str | None) -> int | None:
    """The id of a single token, or None when the vocabulary lacks it (never the unknown token's id)."""
    if not token:
        return None
    value = tokenizer.convert_tokens_to_ids(token)
    if value is None or (value == tokenizer.unk_token_id and token != tokenizer.unk_token):
        return None
    return int(value)


def _role_markers(tokenizer: Any, roles: Sequence[tuple[str, str]], start: str, end: str) -> list[Boundary]:
    end_ids = _encode(tokenizer, end)
    if not end_ids:
        return []
    out = []
    for role, written in roles:
        start_ids = _encode(tokenizer, start.format(role=written))
        if start_ids:
            out.append(Boundary(role, start_ids, end_ids))
    return out


def _inst_markers(tokenizer: Any, *, system: bool) -> list[Boundary]:
    """``[INST] user [/INST] answer</s>``: the user turn hands its ``[/INST]`` to the assistant's start."""
    eos = tokenizer.eos_token_id
    if eos is None:
        return []
    out = []
    if system:
        sys_start, sys_end = _encode(tokenizer, "[SYSTEM_PROMPT]"), _encode(tokenizer, "[/SYSTEM_PROMPT]")
        if sys_start and sys_end:
            out.append(Boundary("system", sys_start, sys_end))
    inst, inst_end = _encode(tokenizer, "[INST]"), _encode(tokenizer, "[/INST]")
    if inst and inst_end:
        out.append(Boundary("user", inst, inst_end, include_end=False))
        out.append(Boundary("assistant", inst_end, (int(eos),)))
    return out


def boundaries_for(template: str | None, tokenizer: Any) -> list[Boundary]:
    """The role markers of a chat template family (empty: every non-media token trains)."""
    if template in ("qwen2_vl", "qwen3_5"):
        return _role_markers(tokenizer, [(r, r) for r in ("system", "user", "assistant")],
                             "<|im_start|>{role}\n", "<|im_end|>")
    if template in ("gemma3", "gemma3n"):
        # the templates write the assistant as "model" and fold the system prompt into the first user turn
        return _role_markers(tokenizer, [("assistant", "model"), ("user", "user")], "<start_of_turn>{role}\n",
                             "<end_of_turn>")
    if template in ("gemma4", "gemma4_unified"):
        return _role_markers(tokenizer, [("assistant", "model"), ("user", "user"), ("system", "system")],
                             "<|turn>{role}\n", "<turn|>")
    if template == "llama3_2_vision":
        return _role_markers(tokenizer, [(r, r) for r in ("system", "user", "assistant", "ipython", "tool")],
                             "<|start_header_id|>{role}<|end_header_id|>\n\n", "<|eot_id|>")
    if template == "llama4":
        return _role_markers(tokenizer, [(r, r) for r in ("system", "user", "assistant", "ipython", "tool")],
                             "<|header_start|>{role}<|header_end|>\n\n", "<|eot|>")
    if template == "pixtral":
        return _inst_markers(tokenizer, system=False)
    if template == "mistral_v7_tekken":
        return _inst_markers(tokenizer, system=True)
    return []


def media_ids(template: str | None, processor: Any) -> set[int]:
    """Token ids that stand for media (image/audio placeholders and, per family, their delimiters)."""
    tok = processor.tokenizer
    ids: set[int | None] = set()
    if template in ("qwen2_vl", "qwen3_5"):
        ids.add(_token_id(tok, "<|image_pad|>"))
        if template == "qwen3_5":
            ids.add(_token_id(tok, "<|video_pad|>"))
    elif template == "gemma3":
        ids.add(_token_id(tok, getattr(tok, "boi_token", None) or getattr(processor, "image_token", None)))
        soft = _token_id(tok, "<image_soft_token>")
        ids.add(soft if soft is not None else 262144)  # Axolotl's fallback id for Gemma 3's soft image token
    elif template == "gemma3n":
        ids.add(_token_id(tok, getattr(processor, "image_token", None)))
        for attr in ("image_token_id", "audio_token_id", "boi_token_id", "eoi_token_id"):
            value = getattr(tok, attr, None)
            ids.add(int(value) if value is not None else None)
    else:
        ids.add(_token_id(tok, getattr(processor, "image_token", None)))
    ids.discard(None)
    return {int(i) for i in ids if i is not None}


def build_rule(cfg: Any, processor: Any) -> LabelRule:
    """The label rule of a config: template family, masking knobs of the first dataset (Axolotl's choice)."""
    tok = processor.tokenizer
    first = (cfg.datasets or [None])[0]
    roles = getattr(first, "roles_to_train", None)
    eos = getattr(first, "train_on_eos", None) or "turn"
    if eos not in EOS_MODES:
        raise UserError(f"datasets[0].train_on_eos: {eos!r} is not one of {', '.join(EOS_MODES)}")
    masked = media_ids(cfg.chat_template, processor)
    if tok.pad_token_id is not None:
        masked.add(int(tok.pad_token_id))
    return LabelRule(
        boundaries=boundaries_for(cfg.chat_template, tok),
        masked_ids=masked,
        roles_to_train=tuple(roles) if roles is not None else ("assistant",),
        train_on_inputs=bool(cfg.train_on_inputs),
        train_on_eos=eos,
    )
