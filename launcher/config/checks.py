"""Cross-field rules and name checks: options that conflict or need each other, names nothing would resolve.

Kept apart from the pydantic models so every problem is reported with the key it belongs to (and so the
file line), all at once, instead of stopping at the first validator that raises. The rules are Axolotl's
(``utils/schemas/validation.py`` on its main branch), never stricter: where Axolotl accepts a setting and
ignores it, ``review`` returns a warning instead of a problem.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

from mudpuppy.launcher.config import axolotl_keys, names
from mudpuppy.launcher.config.schema import Config
from mudpuppy.launcher.config.schema.kernels import KNOWN_PLUGINS, UNSUPPORTED_PLUGINS

Problem = tuple[tuple[str | int, ...], str]


def find_conflicts(cfg: Config) -> list[Problem]:
    return review(cfg)[0]


def review(cfg: Config, given: frozenset[str] | set[str] = frozenset()) -> tuple[list[Problem], list[Problem]]:
    """(problems, warnings) for a validated config; ``given`` are the top-level keys the file itself set."""
    warnings: list[Problem] = []
    problems = [*_conflicts(cfg, given, warnings), *_names(cfg), *_plugins(cfg, warnings)]
    return problems, warnings


def _names(cfg: Config) -> Iterator[Problem]:
    """Every name the runtime will look up, checked now instead of after tokenization and model load."""
    checks: list[tuple[tuple[str | int, ...], str | None, Callable[[str], str | None]]] = [
              (("optimizer",), cfg.optimizer, names.check_optimizer),
              (("lr_scheduler",), cfg.lr_scheduler, names.check_scheduler),
              (("rl",), cfg.rl, names.check_rl),
              (("chat_template",), cfg.chat_template, names.check_chat_template)]
    # process reward models read token-labelled SFT rows (stepwise_supervised), not preference pairs
    family = names.preference_family(cfg.rl, bool(cfg.reward_model) and not cfg.process_reward_model)
    for key in ("datasets", "test_datasets"):
        for i, ds in enumerate(getattr(cfg, key) or []):
            checks.append(((key, i, "chat_template"), ds.chat_template, names.check_chat_template))
            if isinstance(ds.type, str):
                if family:
                    checks.append(((key, i, "type"), ds.type, partial(names.check_preference_type, family=family)))
                else:
                    checks.append(((key, i, "type"), ds.type, names.check_sft_type))
    for path, value, check in checks:
        if value is not None:
            problem = check(str(value))
            if problem:
                yield path, problem


def _plugins(cfg: Config, warnings: list[Problem]) -> Iterator[Problem]:
    for i, name in enumerate(cfg.plugins or []):
        if name in KNOWN_PLUGINS:
            continue
        package = axolotl_keys.PLUGINS.get(name)
        if package is None:
            yield ("plugins", i), (f"{name!r} is not an Axolotl plugin mudpuppy knows "
                                   f"(known: axolotl.integrations.<{'|'.join(sorted(UNSUPPORTED_PLUGINS))}>...)")
        elif package in ("cut_cross_entropy", "liger"):
            continue
        else:
            warnings.append((("plugins", i), f"{name} is not run by mudpuppy: "
                             f"{UNSUPPORTED_PLUGINS.get(package, 'it has no effect here')}"))


def _conflicts(cfg: Config, given: frozenset[str] | set[str], warnings: list[Problem]) -> Iterator[Problem]:
    if not cfg.datasets and not cfg.pretraining_dataset:
        yield ("datasets",), "either datasets or pretraining_dataset is required (datasets: - path: ... type: ...)"
    if cfg.pretraining_dataset:
        yield from _pretraining(cfg, warnings)
    elif cfg.streaming:
        warnings.append((("streaming",), "streaming applies to pretraining_dataset here: datasets: entries are "
                                         "tokenized ahead (the same rows, cached)"))
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
    if not cfg.val_set_size and not cfg.test_datasets and cfg.eval_strategy != "no":
        # Axolotl rejects eval_steps/eval_strategy only when val_set_size: 0 is written; otherwise it runs
        # without evaluation, and evals_per_epoch without eval data is always accepted.
        asked = [k for k in ("eval_steps", "eval_strategy", "evals_per_epoch") if getattr(cfg, k)]
        if "val_set_size" in given and asked and asked[0] != "evals_per_epoch":
            yield (asked[0],), "eval_steps and eval_strategy need evaluation data: set val_set_size > 0 or " \
                               "test_datasets"
        elif asked:
            warnings.append(((asked[0],), "no evaluation data (val_set_size is 0 and no test_datasets): "
                                          "nothing is evaluated"))
    if cfg.gradient_checkpointing == "offload_disk":
        warnings.append((("gradient_checkpointing",), "offload_disk keeps activations in CPU memory, not on disk "
                                                      "(mudpuppy offloads with torch's save_on_cpu)"))
    if cfg.save_safetensors is False:
        yield ("save_safetensors",), "save_safetensors: false is not supported with transformers 5, which always " \
                                     "writes safetensors; remove the key"
    if cfg.optimizer == "muon":
        yield from _muon(cfg)
    if cfg.rl == "ebft":
        yield from _ebft(cfg, warnings)
    if cfg.rl == "gdpo" and cfg.trl is not None and cfg.trl.multi_objective_aggregation == "sum_then_normalize":
        yield ("trl", "multi_objective_aggregation"), "sum_then_normalize is GRPO, but rl: gdpo was selected"
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
    # Axolotl: legacy flags next to attn_implementation are an error; several flags pick one by priority
    attention = [k for k in ("flex_attention", "flash_attention", "sdp_attention", "eager_attention")
                 if getattr(cfg, k)]
    if attention and cfg.attn_implementation:
        yield (attention[0],), (f"attn_implementation cannot be combined with the legacy flag {attention[0]}; "
                                "keep only attn_implementation")
    elif len(attention) > 1:
        warnings.append(((attention[1],), f"several attention flags set: {attention[0]} wins "
                                          f"({cfg.attention_implementation()})"))
    if cfg.deepspeed and (cfg.fsdp or cfg.fsdp_config is not None or cfg.fsdp_version):
        yield ("deepspeed",), "deepspeed and fsdp cannot be used together; keep one"
    if cfg.processor_type and cfg.sample_packing:
        # Axolotl's multimodal collator refuses packing ("Packing is currently not supported.")
        yield ("sample_packing",), "sample_packing is not supported with multimodal models (processor_type is " \
                                   "set); set sample_packing: false"
    if cfg.processor_type and cfg.rl:
        yield ("rl",), f"rl: {cfg.rl} with multimodal rows (processor_type) is not supported by mudpuppy; " \
                       "remove processor_type or rl"
    if cfg.dataset_exact_deduplication and cfg.skip_prepare_dataset:
        yield ("dataset_exact_deduplication",), "dataset_exact_deduplication runs while preparing the dataset, " \
                                                "which skip_prepare_dataset: true skips; keep one"
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


def _muon(cfg: Config) -> Iterator[Problem]:
    """Axolotl's Muon rules (DeepSpeed never, FSDP only as version 2), then what mudpuppy's Muon does not cover."""
    if cfg.deepspeed:
        yield ("optimizer",), "muon is incompatible with DeepSpeed (as in Axolotl); use DDP or FSDP2, " \
                              "or another optimizer"
    if cfg.fsdp or cfg.fsdp_config:
        raw = cfg.fsdp_config or {}
        version = cfg.fsdp_version or raw.get("fsdp_version") or raw.get("version") or 1  # Axolotl's default: 1
        if str(version) != "2":
            yield ("optimizer",), "muon is only compatible with FSDP2: set fsdp_version: 2 to use it with FSDP"
    if cfg.rl or (cfg.reward_model and not cfg.process_reward_model):
        yield ("optimizer",), "muon is built by mudpuppy's SFT/pretraining trainer only; rl and reward-model " \
                              "runs use TRL's optimizers (pick another optimizer)"
    if cfg.loraplus_lr_ratio or cfg.embedding_lr or cfg.embedding_lr_scale:
        yield ("optimizer",), "muon cannot be combined with loraplus_lr_ratio/embedding_lr/embedding_lr_scale in " \
                              "mudpuppy (they build their own param groups); remove one"


def _pretraining(cfg: Config, warnings: list[Problem]) -> Iterator[Problem]:
    """Axolotl's rules for streamed pretraining data (``utils/schemas/validation.py``)."""
    if not cfg.max_steps:
        yield ("max_steps",), "max_steps is required with pretraining_dataset: a stream has no length to plan from"
    if cfg.val_set_size:
        yield ("val_set_size",), "val_set_size is not supported with pretraining_dataset; use test_datasets"
    if cfg.dataset_exact_deduplication:
        yield ("dataset_exact_deduplication",), "dataset_exact_deduplication is not available for streamed data"
    if cfg.include_tokens_per_second:
        yield ("include_tokens_per_second",), "pretraining_dataset and include_tokens_per_second cannot be used " \
                                              "together (as in Axolotl)"
    if cfg.pretrain_multipack_buffer_size and cfg.streaming_multipack_buffer_size not in (None, 10_000):
        yield ("pretrain_multipack_buffer_size",), "pretrain_multipack_buffer_size is the old name of " \
                                                   "streaming_multipack_buffer_size; keep one"
    entries = cfg.pretraining_dataset or []
    if len(entries) > 1:
        warnings.append((("pretraining_dataset", 1), "only the first pretraining_dataset entry is streamed "
                                                     "(as in Axolotl); the others are ignored"))
    if cfg.datasets:
        warnings.append((("datasets",), "datasets are ignored when pretraining_dataset is set (as in Axolotl)"))
    first = entries[0]
    if not first.path:
        yield ("pretraining_dataset", 0, "path"), "the entry needs a path"
    elif isinstance(first.type, str) and first.type != "pretrain":
        problem = names.check_sft_type(first.type)
        if problem:
            yield ("pretraining_dataset", 0, "type"), problem


STRIDED_KEYS = ("stride", "context_length", "generate_max_len", "n_samples_per_prompt", "temperature", "top_p",
                "rl_coef", "advantage_estimator", "min_completion_prefix")


def _ebft(cfg: Config, warnings: list[Problem]) -> Iterator[Problem]:
    """Structured EBFT runs on TRL's GRPO trainer (``runtime.rl.ebft``); strided mode on our own block-parallel
    trainer (``runtime.rl.ebft_strided``). Each mode warns about the other mode's keys, which it does not read."""
    ebft = cfg.ebft
    if ebft is not None and ebft.mode == "strided":
        yield from _ebft_strided(cfg, warnings)
        return
    if ebft is not None:
        stray = [k for k in STRIDED_KEYS if getattr(ebft, k) is not None]
        if stray:
            warnings.append((("ebft", stray[0]), f"{', '.join(stray)} only apply to mode: strided; ignored"))
        if ebft.ce_coef:
            warnings.append((("ebft", "ce_coef"), "a cross-entropy term is part of strided mode only; ignored"))
        if ebft.adaptive_max_tokens or ebft.gt_length_multiplier is not None:
            warnings.append((("ebft", "adaptive_max_tokens"), "adaptive_max_tokens/gt_length_multiplier size vLLM "
                                                              "requests; generation stops at max_completion_length"))
    if cfg.trl is not None and cfg.trl.async_prefetch:
        warnings.append((("trl", "async_prefetch"), "generation runs in step with training (no async prefetch)"))


def _ebft_strided(cfg: Config, warnings: list[Problem]) -> Iterator[Problem]:
    """Axolotl's rules for strided mode (its EBFTValidationMixin), with the same meaning, plus what is not read."""
    ebft = cfg.ebft
    assert ebft is not None
    if cfg.torch_compile is True and cfg.gradient_checkpointing:
        yield ("torch_compile",), "EBFT strided mode: torch_compile with gradient_checkpointing breaks " \
                                  "recomputation on the strided masks; Axolotl refuses it too: remove torch_compile"
    elif cfg.torch_compile is True:
        warnings.append((("torch_compile",), "EBFT strided mode: every step has a different sequence length, so "
                                             "torch_compile recompiles; consider removing it"))
    if getattr(cfg, "activation_offloading", None) is True and cfg.attn_implementation == "flex_attention":
        yield ("activation_offloading",), "EBFT strided mode: activation_offloading conflicts with flex_attention's " \
                                          "checkpointing; Axolotl refuses it too: remove activation_offloading"
    if cfg.attn_implementation not in (None, "eager", "sdpa"):
        warnings.append((("attn_implementation",), f"EBFT strided mode runs attention as sdpa with dense block "
                                                   f"masks; {cfg.attn_implementation} is not used for it"))
    if ebft.adaptive_max_tokens or ebft.gt_length_multiplier is not None:
        warnings.append((("ebft", "adaptive_max_tokens"), "adaptive_max_tokens/gt_length_multiplier size structured "
                                                          "mode's generations; strided blocks are generate_max_len"))
    if ebft.embed_method in ("completion_mean", "concat"):
        warnings.append((("ebft", "embed_method"), f"{ebft.embed_method}: strided mode pools each block by its last "
                                                   "token (as Axolotl does); use last_token or mean_pooling"))
    samples = ebft.n_samples_per_prompt or 4
    if samples == 1 and (ebft.diversity_coef is None or ebft.diversity_coef > 0):
        warnings.append((("ebft", "n_samples_per_prompt"), "one sample per document has no diversity term; "
                                                           "diversity_coef is taken as 0"))
    if samples == 1 and (ebft.advantage_estimator or "rloo") != "reinforce":
        warnings.append((("ebft", "advantage_estimator"), "one sample per document has no group baseline; "
                                                          "advantages are the raw rewards (reinforce)"))
    if cfg.trl is not None:
        warnings.append((("trl",), "trl settings drive structured mode; strided mode samples with ebft.temperature "
                                   "and ebft.top_p"))
    seq = cfg.sequence_len or 512
    gen, stride, ctx = ebft.generate_max_len or 8, ebft.stride or 8, ebft.context_length or 8
    full = seq + max(0, (seq - gen - ctx) // stride + 1) * gen
    if full * samples > 20000:
        warnings.append((("ebft", "n_samples_per_prompt"), f"{full} tokens per rollout x {samples} samples = "
                                                           f"{full * samples} per document per step: a 1B+ model "
                                                           "may need more than 24 GB"))
