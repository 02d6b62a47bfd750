"""TRL trainer construction for ``rl:`` / ``reward_model:`` runs.

Each TRL trainer is combined with ``MudpuppyTrainer`` (``class X(MudpuppyTrainer, DPOTrainer)``): the MRO puts our
checkpoint staging/publishing, rotation, LoRA+ and schedule hooks in front of TRL's loss code, so RL runs save,
resume and requeue exactly like SFT runs. Reference model: with an adapter TRL scores the reference with the
adapter's starting point (a frozen copy of the adapter, or adapters disabled), no second model; a full fine-tune
gets a frozen deep copy of the policy as it was before the first step.
"""

from __future__ import annotations

import copy
import importlib
import os
from functools import cache
from typing import Any

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.rl.args import plan_rl

# mode -> (module, trainer class, config class)
TRAINERS = {
    "dpo": ("trl", "DPOTrainer", "DPOConfig"),
    "ipo": ("trl", "DPOTrainer", "DPOConfig"),
    "kto": ("trl", "KTOTrainer", "KTOConfig"),
    "grpo": ("trl", "GRPOTrainer", "GRPOConfig"),
    "reward": ("trl", "RewardTrainer", "RewardConfig"),
    "orpo": ("trl.experimental.orpo", "ORPOTrainer", "ORPOConfig"),
    "simpo": ("trl.experimental.cpo", "CPOTrainer", "CPOConfig"),
}
NEEDS_REFERENCE = ("dpo", "ipo", "kto")


def _import(mode: str) -> tuple[type, type]:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    module_name, trainer_name, config_name = TRAINERS[mode]
    module = importlib.import_module(module_name)
    return getattr(module, trainer_name), getattr(module, config_name)


@cache
def trainer_class(mode: str) -> type:
    """The TRL trainer for ``mode`` with mudpuppy's checkpoint protocol in front of it in the MRO."""
    from mudpuppy.runtime.train.trainer import MudpuppyTrainer

    trl_cls, _ = _import(mode)
    return type(f"Mudpuppy{trl_cls.__name__}", (MudpuppyTrainer, trl_cls), {"__module__": __name__})


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def frozen_copy(model: Any) -> Any:
    ref = copy.deepcopy(model)
    ref.eval()
    for param in ref.parameters():
        param.requires_grad_(False)
    return ref


def build_rl_trainer(cfg: Any, *, model: Any, tokenizer: Any, train_dataset: Any, eval_dataset: Any, plan: Any,
                     callbacks: list[Any], device: str) -> Any:
    if cfg.rl == "ebft" and cfg.ebft is not None and cfg.ebft.mode == "strided":  # our own trainer, not TRL's
        from mudpuppy.runtime.rl.ebft_strided import build_trainer

        return build_trainer(cfg, model=model, tokenizer=tokenizer, train_dataset=train_dataset,
                             eval_dataset=eval_dataset, plan=plan, callbacks=callbacks)
    rl = plan_rl(cfg, plan.args, device=device)
    trl_cls, config_cls = _import(rl.mode)
    try:
        args = config_cls(**rl.kwargs)
    except (ValueError, TypeError) as exc:
        raise UserError(f"rl: {rl.mode}: settings rejected by TRL: {str(exc).splitlines()[0]}") from None
    kwargs: dict[str, Any] = {
        "model": model,
        "args": args,
        "train_dataset": train_dataset,
        "eval_dataset": eval_dataset,
        "processing_class": tokenizer,
        "callbacks": callbacks,
        "save_total_limit": plan.save_total_limit,
        "loraplus": plan.loraplus,
        "constant_lr": plan.constant_lr,
        "embedding_lr": plan.embedding_lr,
        "offload_activations": plan.offload_activations,
    }
    if rl.mode in NEEDS_REFERENCE and not _is_peft(model) and not cfg.precompute_ref_log_probs:
        kwargs["ref_model"] = frozen_copy(model)
    if rl.mode == "grpo":
        from mudpuppy.runtime.rl.rewards import reward_functions

        funcs = reward_functions(list(cfg.trl.reward_funcs or [])) if cfg.trl is not None else []
        if cfg.rl == "ebft":  # the feature-matching reward first (runtime.rl.ebft)
            from mudpuppy.runtime.rl.ebft import FeatureMatchingReward

            funcs.insert(0, FeatureMatchingReward(cfg, model, tokenizer, int(args.num_generations)))
        kwargs["reward_funcs"] = funcs
    if rl.mode == "reward":
        _check_reward_model(model)
    try:
        return trainer_class(rl.mode)(**kwargs)
    except ValueError as exc:  # TRL validates its settings against the model/data here
        raise UserError(f"rl: {rl.mode}: TRL rejected the setup: {str(exc).splitlines()[0]}") from None


def _check_reward_model(model: Any) -> None:
    base = model.get_base_model() if _is_peft(model) else model
    if not type(base).__name__.endswith("ForSequenceClassification"):
        raise UserError("reward_model: true needs a sequence-classification head",
                        hint="set model_type: AutoModelForSequenceClassification and num_labels: 1")
