"""The names a config may use (optimizer, lr_scheduler, rl, chat_template, dataset ``type:``), as plain data.

``config validate`` checks names against these without importing torch; the runtime dispatches on the same
objects (``runtime.train.args`` reads ``OPTIMIZERS``/``SCHEDULERS``, ``runtime.data.chat_templates`` lists
the same template folder), and tests prove each registry equals what the runtime resolves: transformers' own
enums for optimizers and schedulers, the strategy tables for ``type:``. A name Axolotl knows that mudpuppy
does not run is "known but unsupported": a clear validate error instead of a typo's did-you-mean.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from functools import cache
from importlib import resources

from mudpuppy.launcher.config import axolotl_keys

# transformers.training_args.OptimizerNames (the runtime hands the name to TrainingArguments(optim=...)).
OPTIMIZERS = (
    "adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor",
    "adamw_anyprecision", "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad", "adamw_bnb_8bit",
    "adamw_8bit", "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit", "paged_adamw_8bit",
    "paged_ademamix_32bit", "paged_ademamix_8bit", "paged_lion_32bit", "paged_lion_8bit", "rmsprop", "rmsprop_bnb",
    "rmsprop_bnb_8bit", "rmsprop_bnb_32bit", "galore_adamw", "galore_adamw_8bit", "galore_adafactor",
    "galore_adamw_layerwise", "galore_adamw_8bit_layerwise", "galore_adafactor_layerwise", "lomo", "adalomo",
    "grokadamw", "schedule_free_radam", "schedule_free_adamw", "schedule_free_sgd", "apollo_adamw",
    "apollo_adamw_layerwise", "stable_adamw",
)
# Axolotl's own optimizers that mudpuppy builds itself (runtime.train.muon).
OWN_OPTIMIZERS = ("muon",)
# transformers.trainer_utils.SchedulerType (TrainingArguments(lr_scheduler_type=...)).
SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt",
    "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay", "greedy",
)
# Axolotl's own schedulers (its trainer mixin builds them); not implemented here.
UNSUPPORTED_SCHEDULERS = {"one_cycle": "Axolotl's OneCycleLR schedule", "rex": "Axolotl's REX schedule"}

RL_MODES = ("dpo", "ipo", "simpo", "kto", "orpo", "grpo", "gdpo", "ebft")
UNSUPPORTED_RL: dict[str, str] = {}

# Dataset ``type:`` names the SFT pipeline resolves (runtime.data.strategies.build_strategy).
SFT_TYPES = frozenset({
    "completion", "input_output", "pygmalion", "pygmalion.load", "chat_template", "chat_template.default",
    "chat_template.load", "sharegpt",
    "alpaca", "jeopardy", "oasst", "gpteacher", "explainchoice", "concisechoice", "summarizetldr",
    "alpaca_chat", "alpaca_chat.load_qa", "alpaca_chat.load_concise", "alpaca_chat.load_camel_ai",
    "alpaca_chat.load_no_prompt", "alpaca_instruct", "alpaca_w_system", "alpaca_w_system.load_chat",
    "alpaca_w_system.load_instruct", "alpaca_w_system.load_open_orca", "alpaca_w_system.load_open_orca_chatml",
    "context_qa", "context_qa.load_404", "context_qa.load_v2", "orcamini", "metharme",
    "alpaca_w_system.load", "context_qa.load", "orcamini.load", "metharme.load", "alpaca_chat.load",
    "alpaca_instruct.load", "alpaca_instruct.load_instruct", "alpaca_instruct.load_no_prompt",
    "llama2_chat", "llama2_chat.load", "stepwise_supervised", "stepwise_supervised.load",
})
# ``type: alpaca:chatml`` style suffixes Axolotl's instruction prompters take.
PROMPT_STYLES = ("instruct", "chat", "chatml", "phi")
# Preference ``type:`` names per family (runtime.data.preference.strategies.known_types).
PREFERENCE_TYPES: dict[str, frozenset[str]] = {
    "dpo": frozenset({f"{m}.{t}" for m in ("chatml", "llama3")
                      for t in ("default", "argilla_chat", "icr", "intel", "prompt_pairs", "ultra")}
                     | {"chatml", "llama3", "chat_template", "chat_template.default", "chat_template.argilla_chat",
                        "passthrough", "passthrough.default", "zephyr.nectar",
                        # reward models (rl unset, reward_model: true) read their pairs through the dpo family
                        "bradley_terry.chat_template", "bradley_terry.chat_template.load"}),
    "kto": frozenset({f"{m}.{t}" for m in ("chatml", "llama3")
                      for t in ("argilla", "argilla_chat", "intel", "prompt_pairs", "ultra")}
                     | {"passthrough", "passthrough.default"}),
    "orpo": frozenset({"chat_template.argilla", "passthrough", "passthrough.default"}),
    "grpo": frozenset({"passthrough", "passthrough.default"}),
}
# Chat template choices that are not files: the tokenizer's own template, jinja text, and the fallback prefix.
TEMPLATE_KEYWORDS = ("tokenizer_default", "jinja")
FALLBACK_PREFIX = "tokenizer_default_fallback_"


@cache
def chat_templates() -> frozenset[str]:
    """Named templates mudpuppy ships: the same ``templates/chat/*.jinja`` files the runtime renders."""
    folder = resources.files("mudpuppy.templates") / "chat"
    return frozenset(e.name[: -len(".jinja")] for e in folder.iterdir() if e.name.endswith(".jinja"))


def _unknown(what: str, name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"unknown {what} {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def preference_family(rl: str | None, reward_model: bool) -> str | None:
    """The preference family a config's datasets belong to (as ``runtime.data.preference`` decides)."""
    if rl in ("dpo", "ipo", "simpo") or (rl is None and reward_model):
        return "dpo"
    if rl in ("gdpo", "ebft"):  # EBFT structured mode is GRPO with a feature-matching reward
        return "grpo"
    return rl


def check_chat_template(name: str) -> str | None:
    """None when ``name`` resolves; otherwise the problem, saying whether Axolotl knows the name."""
    if name in TEMPLATE_KEYWORDS or name in chat_templates():
        return None
    base = name[len(FALLBACK_PREFIX):] if name.startswith(FALLBACK_PREFIX) else name
    if base in chat_templates():
        return None
    if base in axolotl_keys.CHAT_TEMPLATES:
        return f"{base!r} is an Axolotl chat template mudpuppy does not ship yet"
    return _unknown("chat template", name, chat_templates() | set(axolotl_keys.CHAT_TEMPLATES))


def check_optimizer(name: str) -> str | None:
    if name in OPTIMIZERS or name in OWN_OPTIMIZERS:
        return None
    if name in axolotl_keys.CUSTOM_OPTIMIZERS:
        return f"{name!r} is one of Axolotl's own optimizers, which mudpuppy does not implement"
    return _unknown("optimizer", name, OPTIMIZERS)


def check_scheduler(name: str) -> str | None:
    if name in SCHEDULERS:
        return None
    if name in UNSUPPORTED_SCHEDULERS:
        return f"{name!r} ({UNSUPPORTED_SCHEDULERS[name]}) is not implemented by mudpuppy"
    return _unknown("lr_scheduler", name, SCHEDULERS)


def check_rl(name: str) -> str | None:
    if name in RL_MODES:
        return None
    if name in UNSUPPORTED_RL:
        return f"{name} ({UNSUPPORTED_RL[name]}) is an Axolotl mode mudpuppy does not support"
    return _unknown("rl mode", name, RL_MODES)


def check_sft_type(name: str) -> str | None:
    """None when the SFT pipeline resolves ``type: name`` (a dotted unknown name is a local module.function)."""
    base, _, style = name.partition(":")
    if base in SFT_TYPES or base.startswith("sharegpt"):
        return None if not style or style in PROMPT_STYLES else f"unknown prompt style {style!r} in {name!r}"
    return _unknown_type(name, family="")


def check_preference_type(name: str, family: str) -> str | None:
    if name in PREFERENCE_TYPES.get(family, frozenset()):
        return None
    if any(name in types for types in PREFERENCE_TYPES.values()):
        known = ", ".join(sorted(PREFERENCE_TYPES.get(family, frozenset())))
        return f"{name!r} is not a {family} format (known: {known}, or a module.function transform)"
    if name.partition(":")[0] in SFT_TYPES:
        known = ", ".join(sorted(PREFERENCE_TYPES.get(family, frozenset()))) or "a module.function transform"
        return f"{name!r} is an SFT prompt format; {family} data needs a preference type ({known})"
    return _unknown_type(name, family=family)


def _unknown_type(name: str, family: str) -> str | None:
    prefix = f"{family}:" if family else ""
    module = name.split(".", 1)[0]
    known = {prefix + name, name}  # reward models read SFT-level modules (bradley_terry, stepwise_supervised)
    axolotl_module = bool({prefix + module, module} & axolotl_keys.STRATEGIES) or module in (
        "chatml", "llama3", "chat_template", "user_defined", "passthrough")
    if known & axolotl_keys.STRATEGIES or (axolotl_module and "." not in name):
        return f"{name!r} is an Axolotl prompt strategy mudpuppy does not implement yet"
    if "." in name and not axolotl_module:
        return None  # module.function from a local Python file: resolved at run time (Axolotl's custom types)
    return _unknown("dataset type", name, SFT_TYPES if not family else PREFERENCE_TYPES.get(family, ()))
