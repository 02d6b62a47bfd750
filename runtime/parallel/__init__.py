"""Multi-device training: FSDP2, DeepSpeed ZeRO, context parallelism, sharded checkpoints.

The training recipe calls three hooks, in this order, and nothing else:

* ``training_args_overrides(cfg, env, precision)`` -> keys merged into TrainingArguments (``fsdp``/``fsdp_config``
  translated from Axolotl spelling, ``deepspeed`` resolved from a preset/path to a concrete dict; on CPU
  DeepSpeed's JIT-built shared-memory comm op is switched off here, before anything initialises DeepSpeed);
* ``prepare_model(model, cfg, env)`` after the model (and adapter) is built: context parallelism's attention and
  input sharding;
* ``prepare_trainer(trainer, cfg, env)`` right after the Trainer exists: FSDP on CPU (accelerate drops it there),
  data sharded by data-parallel rank when CP is on, and the FULL final save after SHARDED checkpoints.
"""

from __future__ import annotations

import logging
from typing import Any

from mudpuppy.launcher.errors import UserError

log = logging.getLogger("mudpuppy.runtime.parallel")

__all__ = ["prepare_model", "prepare_trainer", "training_args_overrides"]


def training_args_overrides(cfg: Any, env: Any, precision: Any = None, *, total_steps: int | None = None,
                            warmup_steps: int | None = None) -> dict[str, Any]:
    from mudpuppy.runtime.parallel.context_parallel import check_cp_config
    from mudpuppy.runtime.parallel.deepspeed import require_deepspeed, resolve_deepspeed
    from mudpuppy.runtime.parallel.fsdp import fsdp_enabled, fsdp_training_args

    out: dict[str, Any] = {}
    check_cp_config(cfg, env.world_size)
    if cfg.deepspeed and fsdp_enabled(cfg):
        raise UserError("deepspeed and fsdp cannot be used together; keep one")
    if fsdp_enabled(cfg):
        out.update(fsdp_training_args(cfg, gradient_checkpointing=bool(cfg.gradient_checkpointing)))
        if out["fsdp_config"].get("activation_checkpointing"):
            out["gradient_checkpointing"] = False
    if cfg.deepspeed:
        require_deepspeed()
        if getattr(precision, "device", None) == "cpu":
            from mudpuppy.runtime.parallel.deepspeed import skip_cpu_shm_comm

            skip_cpu_shm_comm()
        from mudpuppy.runtime.train.args import gradient_accumulation

        mode = getattr(precision, "mode", None)
        out["deepspeed"] = resolve_deepspeed(
            cfg, world_size=env.world_size, micro_batch=cfg.micro_batch_size or 1,
            grad_accum=gradient_accumulation(cfg, env.world_size),
            bf16=mode == "bf16", fp16=mode == "fp16", total_steps=total_steps, warmup_steps=warmup_steps)
    return out


def before_model_load(cfg: Any, env: Any, precision: Any = None) -> Any:
    """What must exist before ``from_pretrained``: FSDP's RAM-efficient loading switches, ZeRO-3's config.

    FSDP ``cpu_ram_efficient_loading``: transformers' ``is_fsdp_enabled()`` reads ``ACCELERATE_USE_FSDP``,
    ``FSDP_CPU_RAM_EFFICIENT_LOADING`` and an initialised process group, all of which used to appear only with the
    TrainingArguments, after the model was loaded on every rank. ZeRO-3: announce the config so weights are
    partitioned while loading. Returns the ``HfDeepSpeedConfig`` that must stay referenced until the model is
    built (transformers holds it weakly), or None.
    """
    from mudpuppy.runtime.parallel.fsdp import cpu_ram_efficient_loading, fsdp_enabled

    if env.world_size == 1 and fsdp_enabled(cfg):
        # transformers refuses FSDP outside a distributed launch ("Using fsdp only works in distributed
        # training"): one process started by `mudpuppy train` becomes a group of one, so an FSDP config runs
        # anywhere and its sharded checkpoints can later be resumed on more ranks (DCP reshards them)
        from mudpuppy.runtime.parallel.dist import init_process_group

        _as_group_of_one(env)
        init_process_group()
    if env.world_size > 1 and cpu_ram_efficient_loading(cfg):
        import os

        from mudpuppy.runtime.parallel.dist import init_process_group

        os.environ["ACCELERATE_USE_FSDP"] = "true"
        os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "true"
        init_process_group()
    if not cfg.deepspeed:
        return None
    from mudpuppy.runtime.parallel.deepspeed import zero_stage

    ds = training_args_overrides(cfg, env, precision)["deepspeed"]
    if zero_stage(ds) != 3:
        return None
    # zero.Init parses the config (batch = micro x accum x world) before it would start the process group itself,
    # so without a group it sees world size 1 and fails its batch-size assertion on every rank; and with one
    # process started without torchrun (one GPU + offload) it falls back to MPI discovery, which needs mpi4py.
    # So the group always exists first, a single process getting the env:// variables torchrun would set.
    import os

    import deepspeed

    from mudpuppy.runtime.parallel.dist import init_process_group

    if env.world_size == 1:
        _as_group_of_one(env)
    init_process_group()
    deepspeed.init_distributed(dist_backend="nccl" if getattr(precision, "device", None) == "cuda" else "gloo",
                               auto_mpi_discovery=False)
    from transformers.integrations import HfDeepSpeedConfig

    return HfDeepSpeedConfig(ds)


def _as_group_of_one(env: Any) -> None:
    """The env:// variables torchrun would set, for a single process started without it."""
    import os

    port_given = "MASTER_PORT" in os.environ or "MUDPUPPY_MASTER_PORT" in os.environ
    for name, value in env.torch_variables().items():
        os.environ.setdefault(name, value)
    if not port_given:  # nobody else joins; don't collide with another run on 29500
        os.environ["MASTER_PORT"] = str(_free_port())


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_model(model: Any, cfg: Any, env: Any) -> Any:
    from mudpuppy.runtime.parallel.context_parallel import (
        build_context_parallel,
        check_cp_config,
        cp_mode,
    )

    size = check_cp_config(cfg, env.world_size)
    if size <= 1:
        return model
    import torch.distributed as dist

    if not dist.is_initialized():
        from mudpuppy.runtime.parallel.dist import init_process_group

        init_process_group()
    cp, mesh = build_context_parallel(size, mode=cp_mode(cfg), heads_k_stride=cfg.heads_k_stride)
    cp.attach(model)
    model._mudpuppy_cp = cp
    model._mudpuppy_mesh = mesh
    if env.is_main:
        print(f"mudpuppy: context parallel x{size} ({cp.mode}), data parallel x{env.world_size // size}", flush=True)
    return model


def prepare_trainer(trainer: Any, cfg: Any, env: Any) -> Any:
    from mudpuppy.runtime.parallel.fsdp import enable_fsdp_on_cpu, final_state_dict_type, fsdp_enabled

    on_cpu = fsdp_enabled(cfg) and trainer.args.use_cpu
    if on_cpu and enable_fsdp_on_cpu(trainer) and env.is_main:
        print("mudpuppy: FSDP2 on CPU (gloo)", flush=True)
    from mudpuppy.runtime.parallel.fsdp import mixed_precision_policy

    policy = mixed_precision_policy(cfg)
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if policy is not None and plugin is not None:  # read by accelerate when it shards the model in train()
        plugin.mixed_precision_policy = policy
    model = trainer.model
    mesh = getattr(model, "_mudpuppy_mesh", None)
    if mesh is None:
        inner = getattr(getattr(model, "base_model", None), "model", None)
        mesh = getattr(inner, "_mudpuppy_mesh", None)
    if mesh is not None:
        if getattr(trainer, "is_fsdp_enabled", False):
            raise UserError("context_parallel_size together with fsdp is not wired into the Trainer yet",
                            hint="use context_parallel_size with plain data parallelism (no fsdp keys)")
        # accelerate shards data by ("dp_shard" x "dp_replicate") and gives CP peers the same batch
        trainer.accelerator.state.device_mesh = mesh
    if fsdp_enabled(cfg):
        from transformers import TrainerCallback

        from mudpuppy.runtime.parallel.fsdp import use_final_state_dict_type

        final = final_state_dict_type(cfg)

        class FinalStateDict(TrainerCallback):
            def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                use_final_state_dict_type(trainer, final)

        trainer.add_callback(FinalStateDict())
    return trainer
