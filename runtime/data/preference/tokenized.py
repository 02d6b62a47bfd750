"""The token ids TRL trains on for our preference rows, for ``mudpuppy preprocess --dump``.

They come from TRL's own dataset preparation (``_prepare_dataset`` of the DPO/KTO/Reward trainers, called on an
uninitialised trainer object that carries only the tokenizer), so the dump can never drift from what training
sees. ORPO/SimPO tokenize inside their trainers per batch and GRPO generates, so for those modes the dump carries
the prompt ids (and reply ids where there is a reply) tokenized the same way, without special tokens added twice.
EBFT's strided rows are token ids already and are dumped as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

PREPARED = {"dpo": ("prompt_ids", "chosen_ids", "rejected_ids"), "ipo": ("prompt_ids", "chosen_ids", "rejected_ids"),
            "kto": ("prompt_ids", "completion_ids", "label"),
            "reward": ("chosen_ids", "rejected_ids")}


def trl_rows(cfg: Any, tokenizer: Any, dataset: Any) -> Iterator[dict[str, Any]]:
    from mudpuppy.runtime.rl.args import mode_of, plan_rl
    from mudpuppy.runtime.rl.trainers import _import

    if "input_ids" in dataset.column_names:  # ebft strided: the rows are the token ids the trainer reads
        keys = [k for k in ("input_ids", "attention_mask", "labels", "prompt_length") if k in dataset.column_names]
        for row in dataset:
            yield {k: row[k] for k in keys}
        return
    mode = mode_of(cfg)
    if mode in PREPARED:
        trainer_cls, config_cls = _import(mode)
        base = {"output_dir": cfg.output_dir, "use_cpu": True, "bf16": False, "report_to": "none"}
        kwargs = plan_rl(cfg, {**base, "per_device_train_batch_size": cfg.micro_batch_size or 1}, device="cpu").kwargs
        args = config_cls(**kwargs)
        stub = object.__new__(trainer_cls)  # TRL's method needs only these attributes, not a model
        stub._tokenizer = tokenizer
        stub.calculate_KL = False
        stub.desirable_weight = getattr(args, "desirable_weight", 1.0)
        stub.undesirable_weight = getattr(args, "undesirable_weight", 1.0)
        prepared = trainer_cls._prepare_dataset(stub, dataset, tokenizer, args, "train")
        keys = [k for k in PREPARED[mode] if k in prepared.column_names]
        for row in prepared:
            yield {k: row[k] for k in keys}
        return
    for row in dataset:
        out: dict[str, Any] = {"prompt_ids": _prompt_ids(tokenizer, row["prompt"])}
        for key in ("chosen", "rejected"):
            if key in row:
                out[f"{key}_ids"] = tokenizer(row[key], add_special_tokens=False)["input_ids"]
        yield out


def _prompt_ids(tokenizer: Any, prompt: Any) -> list[int]:
    if isinstance(prompt, list):  # conversational GRPO prompt
        ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) else ids)
    return list(tokenizer(prompt)["input_ids"])
