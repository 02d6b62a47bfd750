"""Preference rows rendered through a jinja chat template: DPO ``chat_template.default`` /
``chat_template.argilla_chat`` and ORPO ``chat_template.argilla``.

The prompt is the conversation rendered with the generation prompt. A reply is rendered after a placeholder user
turn and cut at the first occurrence of its content (then right-stripped), which is how Axolotl isolates the
reply text plus whatever end-of-turn marker the template writes after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mudpuppy.runtime.data import chat_templates
from mudpuppy.runtime.data.preference.formats import Transform
from mudpuppy.runtime.data.rows import RowError, need

DUMMY_USER = {"role": "user", "content": "[[dummy_message]]"}
DEFAULT_ROLE_MAP = {"user": "user", "assistant": "assistant", "system": "system", "tool": "tool"}


class _Renderer:
    def __init__(self, tokenizer: Any, template: str) -> None:
        self.tokenizer = tokenizer
        self.template = template

    def render(self, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
        return str(self.tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt,
                                                      chat_template=self.template, tokenize=False))

    def reply(self, message: dict[str, Any]) -> str:
        text = self.render([DUMMY_USER, message], generation_prompt=False)
        return text[text.find(message["content"]):].rstrip()


def _role_map(ds: Any) -> dict[str, str]:
    if ds.roles:
        return {source: target for target, sources in ds.roles.items() for source in sources}
    return dict(DEFAULT_ROLE_MAP)


def _mappings(ds: Any) -> tuple[str, str]:
    mappings = dict(ds.message_property_mappings or {})
    role = ds.message_field_role or mappings.get("role", "role")
    content = ds.message_field_content or mappings.get("content", "content")
    return role, content


def _message(raw: Any, role_key: str, content_key: str, roles: dict[str, str], field: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise RowError(field, f"expected a message object, got {type(raw).__name__}")
    if role_key not in raw or content_key not in raw:
        raise RowError(field, f"a message lacks {role_key!r} or {content_key!r}")
    role = raw[role_key]
    if role not in roles:
        raise RowError(field, f"role {role!r} is not mapped (known: {', '.join(sorted(roles))}); set `roles:`")
    return {"role": roles[role], "content": raw[content_key]}


def _template(cfg: Any, ds: Any, tokenizer: Any) -> str:
    choice, jinja = chat_templates.dataset_choice(cfg, ds)
    return chat_templates.resolve(choice, jinja, tokenizer, where=f"datasets: {ds.path}: chat_template")


def dpo_default(cfg: Any, ds: Any, tokenizer: Any) -> Transform:
    renderer = _Renderer(tokenizer, _template(cfg, ds, tokenizer))
    field_messages = ds.field_messages or "messages"
    field_chosen = ds.field_chosen or "chosen"
    field_rejected = ds.field_rejected or "rejected"
    role_key, content_key = _mappings(ds)
    roles = _role_map(ds)

    def reply(raw: Any, field: str) -> dict[str, Any]:
        if isinstance(raw, str):
            raw = {role_key: "assistant", content_key: raw}
        elif isinstance(raw, list):
            if not raw:
                raise RowError(field, "is an empty list")
            raw = raw[-1]
        return _message(raw, role_key, content_key, roles, field)

    def transform(row: Mapping[str, Any]) -> dict[str, Any]:
        messages = need(row, field_messages)
        if isinstance(messages, str):
            messages = [{role_key: "user", content_key: messages}]
        if not isinstance(messages, list):
            raise RowError(field_messages, "expected a list of messages or a string")
        prompt = [_message(m, role_key, content_key, roles, field_messages) for m in messages]
        chosen = reply(need(row, field_chosen), field_chosen)
        rejected = reply(need(row, field_rejected), field_rejected)
        return {"prompt": renderer.render(prompt, generation_prompt=True),
                "chosen": renderer.reply(chosen), "rejected": renderer.reply(rejected)}

    return transform


def dpo_argilla_chat(cfg: Any, ds: Any, tokenizer: Any) -> Transform:
    renderer = _Renderer(tokenizer, _template(cfg, ds, tokenizer))
    field_chosen = ds.field_chosen or "chosen"
    field_rejected = ds.field_rejected or "rejected"
    role_key, content_key = _mappings(ds)
    roles = _role_map(ds)

    def transform(row: Mapping[str, Any]) -> dict[str, Any]:
        chosen_raw, rejected_raw = need(row, field_chosen), need(row, field_rejected)
        for field, value in ((field_chosen, chosen_raw), (field_rejected, rejected_raw)):
            if not isinstance(value, list) or not value:
                raise RowError(field, "expected a non-empty conversation (list of messages)")
        history = [_message(m, role_key, content_key, roles, field_chosen) for m in chosen_raw[:-1]]
        chosen = _message(chosen_raw[-1], role_key, content_key, roles, field_chosen)
        rejected = _message(rejected_raw[-1], role_key, content_key, roles, field_rejected)
        return {"prompt": renderer.render(history, generation_prompt=True),
                "chosen": renderer.reply(chosen), "rejected": renderer.reply(rejected)}

    return transform


def orpo_argilla(cfg: Any, ds: Any, tokenizer: Any) -> Transform:
    """ORPO's chat_template.argilla: chosen/rejected are alternating user/assistant turns of equal length."""
    template = chat_templates.resolve(cfg.chat_template, cfg.chat_template_jinja, tokenizer,
                                      where=f"datasets: {ds.path}: chat_template")
    renderer = _Renderer(tokenizer, template)

    def prompt_messages(row: Mapping[str, Any], chosen: list[Any]) -> list[dict[str, Any]]:
        turns, odd = divmod(len(chosen), 2)
        if odd or not turns:
            raise RowError("chosen", f"expected user/assistant pairs, got {len(chosen)} messages")
        out: list[dict[str, Any]] = []
        if row.get("system"):
            out.append({"role": "system", "content": row["system"]})
        for i in range(turns):
            out.append({"role": "user", "content": row["prompt"] if "prompt" in row else _text(chosen, i * 2)})
            if i < turns - 1:
                out.append({"role": "assistant", "content": _text(chosen, i * 2 + 1)})
        return out

    def transform(row: Mapping[str, Any]) -> dict[str, Any]:
        chosen, rejected = need(row, "chosen"), need(row, "rejected")
        for field, value in (("chosen", chosen), ("rejected", rejected)):
            if not isinstance(value, list) or not value:
                raise RowError(field, "expected a non-empty conversation (list of messages)")
        prompt = prompt_messages(row, chosen)
        prompt_text = renderer.render(prompt, generation_prompt=True)
        cut = len(prompt_text)
        chosen_text = renderer.render([*prompt, {"role": "assistant", "content": _text(chosen, -1)}], False)
        rejected_text = renderer.render([*prompt, {"role": "assistant", "content": _text(rejected, -1)}], False)
        return {"prompt": prompt_text, "chosen": chosen_text[cut:], "rejected": rejected_text[cut:]}

    return transform


def _text(messages: list[Any], index: int) -> str:
    try:
        return str(messages[index]["content"])
    except (IndexError, KeyError, TypeError):
        raise RowError("chosen", f"message {index} has no 'content'") from None
