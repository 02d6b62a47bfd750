"""A dataset entry's ``type:`` -> the row transform for the run's preference family, with Axolotl's type names.

Families: ``dpo`` (rl: dpo/ipo/simpo and reward models; rows prompt/chosen/rejected), ``kto`` (prompt/completion/
label), ``orpo`` (prompt/chosen/rejected via a chat template) and ``grpo`` (prompt plus whatever columns the
reward functions read), and ``strided`` (``rl: ebft``, ``ebft.mode: strided``: token rows, built by
``runtime.rl.ebft_strided_data``). Any family also takes ``module.function`` from a local file, called as Axolotl
calls it (``fn(cfg, dataset_idx=i)`` returning ``transform`` or ``(transform, {"remove_columns": [...]})``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.data.preference import bradley_terry, formats, templated
from mudpuppy.runtime.data.preference.custom import load_callable, module_file
from mudpuppy.runtime.data.rows import RowError

COLUMNS = {
    "dpo": ("prompt", "chosen", "rejected"),
    "orpo": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
    "grpo": ("prompt",),
    "strided": ("input_ids", "attention_mask", "labels"),
}


def family_of(cfg: Any) -> str:
    if cfg.rl in ("dpo", "ipo", "simpo") or (cfg.rl is None and (cfg.reward_model or cfg.process_reward_model)):
        return "dpo"
    if cfg.rl == "ebft" and cfg.ebft is not None and cfg.ebft.mode == "strided":
        return "strided"
    return "grpo" if cfg.rl in ("gdpo", "ebft") else str(cfg.rl)


@dataclass
class RowTransform:
    """``apply(row)`` gives the row TRL reads; ``keep_all`` keeps the source columns too (custom/GRPO rows)."""

    name: str
    fn: Callable[[Mapping[str, Any]], dict[str, Any]]
    keep_all: bool = False
    remove: list[str] = field(default_factory=list)
    custom: bool = False
    tokenized: bool = False  # rows are token ids already (Bradley-Terry), not text for TRL to tokenize
    columns: tuple[str, ...] | None = None  # the columns kept when not keep_all (default: the family's)

    def apply(self, row: Mapping[str, Any]) -> dict[str, Any]:
        if not self.custom:
            out = self.fn(row)
        else:
            try:
                out = self.fn(dict(row))
            except RowError:
                raise
            except Exception as exc:  # user code: report which field/row instead of a traceback
                raise RowError(self.name, f"transform raised {type(exc).__name__}: {exc}") from None
            if not isinstance(out, Mapping):
                raise RowError(self.name, f"transform returned {type(out).__name__}, expected a dict")
        if not self.keep_all:
            return dict(out)
        merged = {k: v for k, v in row.items() if k not in self.remove}
        merged.update(out)
        return merged


def build_transform(cfg: Any, ds: Any, tokenizer: Any, index: int) -> RowTransform:
    family = family_of(cfg)
    kind = ds.type
    keep_all = family == "grpo"
    if family == "strided":
        return _strided(cfg, ds, tokenizer, index)
    if bradley_terry.is_bradley_terry(kind):
        return RowTransform(kind, bradley_terry.transform(cfg, ds, tokenizer), tokenized=True)
    if kind is None or kind == "passthrough" or kind == "passthrough.default":
        return RowTransform("passthrough", lambda row: dict(row), keep_all=True)
    if not isinstance(kind, str):
        if family == "kto":
            return RowTransform("user_defined", formats.user_defined_kto(kind), keep_all=keep_all)
        if family == "dpo":
            return RowTransform("user_defined", formats.user_defined_dpo(kind), keep_all=keep_all)
        raise UserError(f"datasets: {ds.path}: a user_defined type mapping does not work with rl: {cfg.rl}",
                        hint="give rows in TRL's shape without type:, or a module.function transform")
    name = kind if "." in kind else f"{kind}.default"
    prefix, _, function = name.rpartition(".")
    builtin = _builtin(family, prefix, function, cfg, ds, tokenizer)
    if builtin is not None:
        return RowTransform(kind, builtin, keep_all=keep_all)
    if family == "grpo" and prefix.startswith("ebft_") and module_file(kind) is None:
        from mudpuppy.runtime.rl.ebft import dataset_transform

        fn = dataset_transform(prefix, function)
        if prefix in ("ebft_pretrain", "ebft_strided_structured", "ebft_strided_chat"):
            raise UserError(f"datasets: {ds.path}: type {kind!r} gives token rows for ebft.mode: strided",
                            hint="set ebft.mode: strided, or use ebft_opencode.transform for structured mode")
        if fn is not None:  # Axolotl's prompt_strategies.ebft: rows become prompt + ground_truth only
            return RowTransform(kind, fn, columns=("prompt", "ground_truth"))
        raise UserError(f"datasets: {ds.path}: type {kind!r} is not one of mudpuppy's ebft transforms",
                        hint="ebft_opencode.transform, ebft_chat_multiturn.transform_last_turn, or a local "
                             "module.function")
    if prefix in (*formats.MARKUPS, "chat_template", "user_defined"):
        raise UserError(f"datasets: {ds.path}: type {kind!r} is not a {family} format",
                        hint="known: " + ", ".join(known_types(family)))
    return _custom(cfg, ds, kind, index, tokenizer)


def _strided(cfg: Any, ds: Any, tokenizer: Any, index: int) -> RowTransform:
    """A local ``module.function`` file wins (Axolotl imports it first), else mudpuppy's built-in strided types."""
    from mudpuppy.runtime.rl.ebft_strided_data import COLUMNS, FACTORIES

    kind = ds.type
    if not isinstance(kind, str):
        raise UserError(f"datasets: {ds.path}: ebft.mode: strided needs a type giving token rows",
                        hint="type: ebft_pretrain.transform (raw text), ebft_strided_structured.transform or "
                             "ebft_strided_chat.transform")
    name = kind if "." in kind else f"{kind}.default"
    prefix, _, function = name.rpartition(".")
    factory = FACTORIES.get((prefix, function))
    if factory is None or module_file(kind) is not None:
        if prefix in ("ebft_opencode", "ebft_chat_multiturn", "ebft_reasoning"):
            raise UserError(f"datasets: {ds.path}: type {kind!r} gives prompt/ground_truth rows, which only "
                            "ebft.mode: structured reads",
                            hint="ebft_strided_structured.transform for prompt/completion data, or mode: structured")
        return _custom(cfg, ds, kind, index, tokenizer)
    return RowTransform(kind, factory(cfg, tokenizer), columns=COLUMNS if prefix != "ebft_pretrain" else None)


def _builtin(family: str, prefix: str, function: str, cfg: Any, ds: Any, tokenizer: Any) -> Any:
    if prefix in formats.MARKUPS:
        table = formats.DPO_TYPES if family == "dpo" else formats.KTO_TYPES if family == "kto" else {}
        maker = table.get(function)
        return maker(formats.MARKUPS[prefix]) if maker else None
    if prefix == "chat_template":
        makers = {"dpo": {"default": templated.dpo_default, "argilla_chat": templated.dpo_argilla_chat},
                  "orpo": {"argilla": templated.orpo_argilla}}.get(family, {})
        maker = makers.get(function)
        return maker(cfg, ds, tokenizer) if maker else None
    if prefix == "zephyr" and function == "nectar" and family == "dpo":
        return formats.zephyr_nectar
    if prefix == "user_defined":
        raise UserError(f"datasets: {ds.path}: type user_defined needs a mapping",
                        hint="write type: {field_prompt: ..., field_chosen: ..., ...} instead of a string")
    return None


def known_types(family: str) -> list[str]:
    names: list[str] = []
    if family in ("dpo", "kto"):
        table = formats.DPO_TYPES if family == "dpo" else formats.KTO_TYPES
        names += [f"{m}.{t}" for m in formats.MARKUPS for t in table]
    if family == "dpo":
        names += ["chat_template.default", "chat_template.argilla_chat", "zephyr.nectar"]
    if family == "orpo":
        names += ["chat_template.argilla"]
    names += ["user_defined mapping", "module.function from a local file"]
    return names


def _custom(cfg: Any, ds: Any, kind: str, index: int, tokenizer: Any) -> RowTransform:
    factory = load_callable(kind, where=f"datasets: {ds.path}: type")
    try:
        made = factory(cfg, dataset_idx=index)
    except Exception as exc:
        raise UserError(f"datasets: {ds.path}: type {kind!r}: calling it raised {type(exc).__name__}: {exc}",
                        hint="a transform factory takes (cfg, **kwargs) and returns transform_fn "
                             "or (transform_fn, {'remove_columns': [...]})") from None
    remove: list[str] = []
    keep_all = True
    if isinstance(made, tuple):
        made, options = made
        asked = (options or {}).get("remove_columns") or []
        keep_all = asked != "__all__"
        remove = list(asked) if keep_all else []
    if not callable(made):
        raise UserError(f"datasets: {ds.path}: type {kind!r} returned {type(made).__name__}, not a transform function")
    fn = made
    if "tokenizer" in inspect.signature(fn).parameters:
        def fn(row: Any, _made: Any = made) -> Any:
            return _made(row, tokenizer=tokenizer)
    return RowTransform(kind, fn, keep_all=keep_all, remove=remove, custom=True)
