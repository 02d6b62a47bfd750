"""``deepspeed: zero1|zero2|zero3|zero3_offload|PATH|{...}`` -> one concrete DeepSpeed config dict.

The shipped JSONs (``templates/deepspeed``, also ``mudpuppy fetch deepspeed_configs``) say ``"auto"`` wherever a
value follows from the training config. We fill those here from the same numbers the TrainingArguments get
(micro batch, accumulation, world size, precision, clipping, optimizer and schedule), so the dict handed to
transformers is readable in the log and a disagreement between a user's JSON and the YAML is one UserError naming
both keys instead of transformers' mismatch traceback. Only the model-shape values (``reduce_bucket_size``,
``stage3_prefetch_bucket_size``, ``stage3_param_persistence_threshold``) stay ``"auto"``: transformers fills them
from ``hidden_size`` once the model exists.

An offloaded optimizer (``offload_optimizer``) without an ``optimizer`` section runs the Trainer's own torch
optimizer on the CPU copies; DeepSpeed refuses that unless ``zero_force_ds_cpu_optimizer`` is false, so it is
set to false when absent (the shipped ``zero3_offload`` says so explicitly, as Axolotl's offload configs do).

Two DeepSpeed defaults are pinned because they surprise people: ``gradient_clipping`` is 1.0 in DeepSpeed even
when nothing asked for it (we write ``max_grad_norm``, or transformers' 1.0 default, explicitly), and fp16 and bf16
cannot both be on.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from mudpuppy.launcher.errors import UserError

PRESETS = ("zero1", "zero2", "zero3", "zero3_offload")
MODEL_SHAPE_AUTO = ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold")


def templates_dir() -> Path:
    import mudpuppy.templates

    return Path(mudpuppy.templates.__file__).resolve().parent / "deepspeed"


def load_deepspeed_source(value: str | dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The raw (still ``"auto"``) config and a label for messages: the preset name or the file path."""
    if isinstance(value, dict):
        return json.loads(json.dumps(value)), "deepspeed"
    name = str(value).strip()
    if name in PRESETS:
        path = templates_dir() / f"{name}.json"
    else:
        path = Path(name).expanduser()
        if not path.is_file():
            looks_named = "/" not in name and not name.endswith(".json")
            close = difflib.get_close_matches(name, PRESETS, n=1) if looks_named else []
            hint = (f"did you mean {close[0]!r}?" if close else
                    f"use one of {', '.join(PRESETS)} or a path to a DeepSpeed JSON "
                    "(`mudpuppy fetch deepspeed_configs` copies the shipped ones)")
            raise UserError(f"deepspeed: {name!r} is neither a preset nor an existing file", hint=hint)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"deepspeed: {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(raw, dict):
        raise UserError(f"deepspeed: {path} must hold a JSON object, not {type(raw).__name__}")
    return raw, str(path)


def resolve_deepspeed(cfg: Any, *, world_size: int, micro_batch: int, grad_accum: int, bf16: bool, fp16: bool,
                      total_steps: int | None = None, warmup_steps: int | None = None) -> dict[str, Any]:
    """The config with every training-dependent ``"auto"`` replaced; raises UserError on contradictions."""
    raw, label = load_deepspeed_source(cfg.deepspeed)
    ds = json.loads(json.dumps(raw))
    zero = ds.get("zero_optimization") or {}
    if not isinstance(zero, dict):
        raise UserError(f"deepspeed: {label}: zero_optimization must be an object")
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise UserError(f"deepspeed: {label}: zero_optimization.stage must be 0, 1, 2 or 3 (got {stage!r})")

    clip = cfg.max_grad_norm if cfg.max_grad_norm is not None else 1.0
    filled: dict[tuple[str, ...], Any] = {
        ("train_micro_batch_size_per_gpu",): micro_batch,
        ("gradient_accumulation_steps",): grad_accum,
        ("train_batch_size",): micro_batch * grad_accum * world_size,
        ("gradient_clipping",): clip,
        ("bf16", "enabled"): bf16,
        ("fp16", "enabled"): fp16,
    }
    yaml_keys = {
        ("train_micro_batch_size_per_gpu",): "micro_batch_size",
        ("gradient_accumulation_steps",): "gradient_accumulation_steps",
        ("train_batch_size",): "micro_batch_size x gradient_accumulation_steps x world size",
        ("gradient_clipping",): "max_grad_norm",
        ("bf16", "enabled"): "bf16",
        ("fp16", "enabled"): "fp16",
    }
    if isinstance(ds.get("optimizer"), dict):
        betas = [cfg.adam_beta1 if cfg.adam_beta1 is not None else 0.9,
                 cfg.adam_beta2 if cfg.adam_beta2 is not None else 0.999]
        filled.update({
            ("optimizer", "params", "lr"): cfg.learning_rate,
            ("optimizer", "params", "betas"): betas,
            ("optimizer", "params", "eps"): cfg.adam_epsilon if cfg.adam_epsilon is not None else 1e-8,
            ("optimizer", "params", "weight_decay"): cfg.weight_decay or 0.0,
        })
    if isinstance(ds.get("scheduler"), dict):
        filled[("scheduler", "params", "warmup_max_lr")] = cfg.learning_rate
        filled[("scheduler", "params", "warmup_min_lr")] = 0
        if total_steps is not None:
            filled[("scheduler", "params", "total_num_steps")] = total_steps
        if warmup_steps is not None:
            filled[("scheduler", "params", "warmup_num_steps")] = warmup_steps

    conflicts = []
    for keys, value in filled.items():
        current = _get(ds, keys)
        if current is _MISSING:
            if keys[0] in ("bf16", "fp16") and not value:
                continue  # absent section = off, which is what we want
            _set(ds, keys, value)
        elif current == "auto":
            _set(ds, keys, value)
        elif keys in yaml_keys and not _same(current, value):
            if keys[0] in ("bf16", "fp16") and not current:
                continue  # JSON turns a precision off that the YAML does not use either way
            conflicts.append(f"{'.'.join(keys)}={current!r} but {yaml_keys[keys]} gives {value!r}")
    offload = (zero.get("offload_optimizer") or {}).get("device", "none")
    if offload in ("cpu", "nvme") and not isinstance(ds.get("optimizer"), dict):
        ds.setdefault("zero_force_ds_cpu_optimizer", False)
    if conflicts:
        raise UserError(f"deepspeed: {label} disagrees with the config: " + "; ".join(conflicts),
                        hint='set those JSON values to "auto" (or match the YAML)')
    if _get(ds, ("bf16", "enabled")) is True and _get(ds, ("fp16", "enabled")) is True:
        raise UserError(f"deepspeed: {label} enables both bf16 and fp16; keep one")
    leftover = [".".join(k) for k in _auto_paths(ds) if k[-1] not in MODEL_SHAPE_AUTO]
    if leftover:
        raise UserError(f"deepspeed: {label}: mudpuppy cannot fill \"auto\" for {', '.join(leftover)}",
                        hint="give concrete values for those keys")
    return ds


def zero_stage(ds: dict[str, Any]) -> int:
    return int((ds.get("zero_optimization") or {}).get("stage", 0))


def skip_cpu_shm_comm() -> bool:
    """Keep DeepSpeed's comm layer on plain gloo on CPU instead of JIT-compiling its shared-memory all-reduce.

    On the CPU accelerator DeepSpeed's ``TorchBackend`` builds ``deepspeed_shm_comm`` with g++ the first time any
    process initialises it (the ranks of a torchrun then wait on one build lock). That took 35 s on an idle 2-core
    box and 5 minutes on a loaded one, which looked like a hang after setup. The op only speeds up CPU all-reduce;
    training on CPU is a test/debug path, so we mark it incompatible and DeepSpeed falls back to torch.distributed.
    ``MUDPUPPY_DEEPSPEED_SHM=1`` keeps DeepSpeed's default. Must run before ``deepspeed.init_distributed`` (i.e.
    before TrainingArguments); returns whether it disabled the op.
    """
    import os

    if os.environ.get("MUDPUPPY_DEEPSPEED_SHM") == "1":
        return False
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu.comm import ShareMemCommBuilder

    # deepspeed probes this dict once per process and keeps edits to it (deepspeed/ops/__init__.py)
    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False
    return True


def keep_out_unless_configured(cfg: Any) -> bool:
    """Make ``deepspeed`` unimportable in this process when the config does not ask for it; True when it did.

    accelerate imports DeepSpeed whenever it is installed (``extract_model_from_parallel`` checks for its engine
    while the Trainer is built), and importing it runs DeepSpeed's accelerator probe, which prints a warning and
    costs a second on every run. A ``None`` entry in ``sys.modules`` is Python's own way to say "not importable":
    ``importlib.util.find_spec`` then returns None, so transformers' and accelerate's availability checks say no
    and nothing imports it. Already imported (someone in this process needed it): left alone.
    """
    import sys

    if cfg.deepspeed or "deepspeed" in sys.modules:
        return False
    sys.modules["deepspeed"] = None  # type: ignore[assignment]
    return True


def require_deepspeed() -> None:
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise UserError("deepspeed: the deepspeed package is not installed",
                        hint="pip install 'mudpuppy[deepspeed]' (or remove the deepspeed key)")


_MISSING = object()


def _get(tree: dict[str, Any], keys: tuple[str, ...]) -> Any:
    node: Any = tree
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _set(tree: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
    return bool(a == b)


def _auto_paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(node, dict):
        out: list[tuple[str, ...]] = []
        for key, value in node.items():
            out += _auto_paths(value, (*prefix, str(key)))
        return out
    return [prefix] if node == "auto" else []
