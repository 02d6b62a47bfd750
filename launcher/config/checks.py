"""Cross-field rules: options that conflict or need each other.

Kept apart from the pydantic models so every problem is reported with the key it belongs to (and so the
file line), all at once, instead of stopping at the first validator that raises.
"""

from __future__ import annotations

from collections.abc import Iterator

from mudpuppy.launcher.config.schema import Config

Problem = tuple[tuple[str | int, ...], str]


def find_conflicts(cfg: Config) -> list[Problem]:
    return list(_conflicts(cfg))


def _conflicts(cfg: Config) -> Iterator[Problem]:
    if not cfg.datasets:
        yield ("datasets",), "at least one dataset is required (datasets: - path: ... type: ...)"
    if cfg.warmup_steps and cfg.warmup_ratio:
        yield ("warmup_ratio",), "warmup_steps and warmup_ratio are mutually exclusive; keep one"
    if cfg.val_set_size and cfg.test_datasets:
        yield ("val_set_size",), "val_set_size and test_datasets are mutually exclusive; keep one"
    if cfg.batch_size and cfg.gradient_accumulation_steps not in (None, 1):
        yield ("batch_size",), "set only one of gradient_accumulation_steps or batch_size"
    if cfg.eval_steps and cfg.evals_per_epoch:
        yield ("evals_per_epoch",), "eval_steps and evals_per_epoch are mutually exclusive; keep one"
    if cfg.save_steps and cfg.saves_per_epoch:
        yield ("saves_per_epoch",), "save_steps and saves_per_epoch are mutually exclusive; keep one"
    if cfg.save_strategy and cfg.save_steps and cfg.save_strategy != "steps":
        yield ("save_strategy",), "save_steps needs save_strategy: steps (or remove save_steps)"
    evaluates = (cfg.eval_steps or cfg.evals_per_epoch) and cfg.eval_strategy != "no"
    if evaluates and not cfg.val_set_size and not cfg.test_datasets:
        key = "eval_steps" if cfg.eval_steps else "evals_per_epoch"
        yield (key,), "evaluation needs data: set val_set_size > 0 or test_datasets"
    if (cfg.bf16 is True or cfg.bfloat16) and (cfg.fp16 or cfg.float16):
        yield ("fp16",), "bf16 and fp16 are mutually exclusive; keep one"
    if (cfg.load_in_4bit or cfg.load_in_8bit) and not cfg.adapter:
        key = "load_in_4bit" if cfg.load_in_4bit else "load_in_8bit"
        yield (key,), f"{key} needs an adapter (qlora for 4-bit, lora for 8-bit); full fine-tunes load unquantised"
    if cfg.adapter == "qlora" and not cfg.merge_lora:
        if cfg.load_in_8bit:
            yield ("load_in_8bit",), "qlora loads in 4-bit: use load_in_4bit: true (or adapter: lora for 8-bit)"
        elif not cfg.load_in_4bit:
            yield ("adapter",), "qlora needs load_in_4bit: true"
    if cfg.load_in_4bit and cfg.adapter == "lora":
        yield ("load_in_4bit",), "a LoRA on 4-bit weights is a QLoRA: set adapter: qlora (or drop load_in_4bit)"
    if cfg.load_in_4bit and cfg.load_in_8bit:
        yield ("load_in_8bit",), "load_in_4bit and load_in_8bit are mutually exclusive"
    if cfg.adapter and not cfg.lora_r:
        yield ("adapter",), f"{cfg.adapter} needs lora_r (e.g. lora_r: 16)"
    if cfg.peft_layers_pattern and not cfg.peft_layers_to_transform:
        yield ("peft_layers_pattern",), "peft_layers_pattern needs peft_layers_to_transform"
    if cfg.adapter and cfg.unfrozen_parameters and cfg.peft_layers_to_transform:
        yield ("unfrozen_parameters",), "unfrozen_parameters cannot be combined with peft_layers_to_transform"
    attention = [
        k for k in ("flash_attention", "sdp_attention", "flex_attention", "eager_attention") if getattr(cfg, k)
    ]
    if len(attention) > 1:
        yield (attention[1],), f"choose one attention implementation, not {' and '.join(attention)}"
    if cfg.deepspeed and (cfg.fsdp or cfg.fsdp_config is not None or cfg.fsdp_version):
        yield ("deepspeed",), "deepspeed and fsdp cannot be used together; keep one"
    if cfg.rl and cfg.sample_packing:
        yield ("sample_packing",), f"sample_packing does not work with rl: {cfg.rl}; remove one"
    if cfg.dataset_shard_idx is not None and not cfg.dataset_shard_num:
        yield ("dataset_shard_idx",), "dataset_shard_idx needs dataset_shard_num"
    if cfg.dataset_shard_num and cfg.dataset_shard_idx is not None and cfg.dataset_shard_idx >= cfg.dataset_shard_num:
        yield ("dataset_shard_idx",), "dataset_shard_idx must be smaller than dataset_shard_num"
    if cfg.noisy_embedding_alpha and cfg.neftune_noise_alpha:
        yield ("noisy_embedding_alpha",), "noisy_embedding_alpha is the old name of neftune_noise_alpha; keep one"
    if cfg.max_steps is None and not cfg.num_epochs:
        yield ("num_epochs",), "set num_epochs or max_steps"
    for i, ds in enumerate(cfg.datasets or []):
        if not ds.path:
            yield ("datasets", i, "path"), "each dataset needs a path"
    for i, ds in enumerate(cfg.test_datasets or []):
        if not ds.path:
            yield ("test_datasets", i, "path"), "each dataset needs a path"
