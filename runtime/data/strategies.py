"""``type:`` of a dataset entry -> the strategy object that tokenizes its rows (``tokenize_rows``)."""

from __future__ import annotations

from typing import Any, Protocol

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.data import chat_templates
from mudpuppy.runtime.data.chat import DEFAULT_ROLES, ChatOptions, ChatStrategy
from mudpuppy.runtime.data.instruct import (
    INSTRUCTION_TYPES,
    CompletionStrategy,
    InputOutputStrategy,
    instruction_strategy,
    user_defined_strategy,
)
from mudpuppy.runtime.data.llama2_chat import Llama2ChatStrategy
from mudpuppy.runtime.data.module_strategy import find_module, module_strategy
from mudpuppy.runtime.data.roleplay import PygmalionStrategy
from mudpuppy.runtime.data.rows import Row, RowError
from mudpuppy.runtime.data.stepwise import TYPES as STEPWISE_TYPES
from mudpuppy.runtime.data.stepwise import stepwise_strategy

CHAT_TYPES = ("chat_template", "sharegpt", "chat_template.default", "chat_template.load")


class Strategy(Protocol):
    name: str

    def tokenize_rows(self, rows: list[Any]) -> list[list[Row] | RowError]: ...


def build_strategy(cfg: Any, ds: Any, tokenizer: Any) -> Strategy:
    kind = ds.type
    train_on_inputs = bool(cfg.train_on_inputs)
    if kind is not None and not isinstance(kind, str):
        return user_defined_strategy(kind, tokenizer, train_on_inputs, cfg.sequence_len)
    if kind == "completion":
        return CompletionStrategy(tokenizer, ds.field or "text", cfg.sequence_len)
    if kind in ("pygmalion", "pygmalion.load"):
        return PygmalionStrategy(tokenizer, cfg.sequence_len)
    if kind in STEPWISE_TYPES:
        return stepwise_strategy(ds, tokenizer, cfg.sequence_len)
    if kind in ("llama2_chat", "llama2_chat.load"):
        return Llama2ChatStrategy(tokenizer, cfg.sequence_len)
    if kind == "input_output":
        return InputOutputStrategy(tokenizer, train_on_inputs)
    if kind in CHAT_TYPES or (kind and kind.startswith("sharegpt")):
        return chat_strategy(cfg, ds, tokenizer)
    strategy = instruction_strategy(kind or "", tokenizer, train_on_inputs, cfg.sequence_len, ds.conversation)
    if strategy is None and kind:
        module = find_module(kind)
        if module is not None:
            return module_strategy(kind, module, cfg, ds, tokenizer)
    if strategy is None:
        known = sorted({*INSTRUCTION_TYPES, "completion", "input_output", "chat_template", "sharegpt",
                        "pygmalion", "llama2_chat",
                        "stepwise_supervised"})
        hint = f"did you mean {kind.replace(':load_', '.load_')!r}?" if kind and ":load_" in kind else None
        if kind and kind.startswith("bradley_terry"):
            hint = "bradley_terry.* rows train reward models: set reward_model: true (with num_labels: 1)"
        raise UserError(f"datasets: {ds.path}: unknown type {kind!r}", hint=hint or "known: " + ", ".join(known)
                        + ", or pkg.module: a module of yours with load(tokenizer, cfg, ds_cfg)")
    return strategy


def chat_strategy(cfg: Any, ds: Any, tokenizer: Any) -> ChatStrategy:
    legacy = isinstance(ds.type, str) and ds.type.startswith("sharegpt")
    choice, jinja = chat_templates.dataset_choice(cfg, ds)
    if legacy and ds.conversation and not ds.chat_template:
        choice, jinja = legacy_conversation(ds), None
    template = chat_templates.resolve(choice, jinja, tokenizer, where=f"datasets: {ds.path}: chat_template")
    mappings = dict(ds.message_property_mappings or {})
    thinking_key = ds.template_thinking_key or "reasoning_content"
    if not mappings and not ds.message_field_role and not ds.message_field_content:
        # Axolotl maps the reasoning field by default only when no mapping was given at all.
        mappings[thinking_key] = ds.field_thinking or "reasoning_content"
    if ds.message_field_role:
        mappings["role"] = ds.message_field_role
    if ds.message_field_content:
        mappings["content"] = ds.message_field_content
    mappings.setdefault("role", "from" if legacy else "role")
    mappings.setdefault("content", "value" if legacy else "content")
    roles = {src: dst for dst, sources in ds.roles.items() for src in sources} if ds.roles else dict(DEFAULT_ROLES)
    opts = ChatOptions(
        template=template,
        field_messages=ds.field_messages or ("conversations" if legacy else "messages"),
        field_system=ds.field_system or "system",
        field_tools=ds.field_tools or "tools",
        mappings=mappings,
        roles=roles,
        roles_to_train=list(ds.roles_to_train) if ds.roles_to_train is not None else ["assistant"],
        train_on_inputs=bool(cfg.train_on_inputs),
        train_on_eos=ds.train_on_eos or "turn",
        train_on_eot=ds.train_on_eot,
        eot_tokens=cfg.eot_tokens,
        message_field_training=ds.message_field_training,
        message_field_training_detail=ds.message_field_training_detail,
        thinking_key=thinking_key,
        split_thinking=bool(ds.split_thinking),
        drop_system_message=bool(ds.drop_system_message),
        template_kwargs=dict(cfg.chat_template_kwargs or {}),
    )
    return ChatStrategy(tokenizer, opts)


def legacy_conversation(ds: Any) -> str:
    """``type: sharegpt`` + ``conversation: NAME`` (Axolotl removed sharegpt): read the way Axolotl's migration
    guide rewrites it, as ``type: chat_template`` with ``chat_template: NAME`` over ``conversations`` from/value."""
    name = str(ds.conversation)
    if name not in chat_templates.shipped_templates():
        raise UserError(f"datasets: {ds.path}: conversation: {name!r} is not a chat template name",
                        hint="legacy sharegpt's conversation: now names a chat template: "
                             + ", ".join(sorted(chat_templates.shipped_templates())))
    return name
