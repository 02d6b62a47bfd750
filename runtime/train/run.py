"""The training recipe, top to bottom: tokenizer -> data -> model -> trainer -> checkpoints -> outputs.

``run_training`` returns a ``launcher.contract`` exit code: ``EXIT_OK`` when the outputs are complete,
``EXIT_REQUEUE`` when a preemption signal made it save and stop. A second signal exits inside the handler.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from mudpuppy.launcher.contract import ENV_RUN_ID, ENV_VOLUME, EXIT_OK, EXIT_REQUEUE, mark_requeue
from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.env import Env, read_env
from mudpuppy.runtime.train.signals import PreemptionWatcher

log = logging.getLogger("mudpuppy.runtime")


def resume_checkpoint(cfg: Any, output_dir: Path, environ: dict[str, str] | None = None, *,
                      is_main: bool = True) -> Path | None:
    """The checkpoint to resume from: the one asked for, else the newest sha256-verified one when auto-resuming
    (``runtime.checkpoints.verified``: damaged newer ones are set aside with a warning, or the run refuses)."""
    from mudpuppy.runtime.checkpoints import verified
    from mudpuppy.runtime.checkpoints.manifest import MANIFEST_NAME

    if cfg.resume_from_checkpoint:
        path = Path(cfg.resume_from_checkpoint)
        if not path.is_dir():
            raise UserError(f"resume_from_checkpoint: {str(path)!r} does not exist")
        if not (path / MANIFEST_NAME).is_file() and not (path / "trainer_state.json").is_file():
            raise UserError(f"resume_from_checkpoint: {str(path)!r} is not a complete checkpoint (no manifest)",
                            hint="pick a checkpoint-N folder with mudpuppy-manifest.json, or use "
                                 "auto_resume_from_checkpoints: true")
        verified.check_explicit(path)
        return path
    auto = cfg.auto_resume_from_checkpoints
    if auto is None:  # our default: on when a backend launched us or a volume keeps checkpoints; off for plain local
        variables = environ if environ is not None else os.environ
        auto = bool(variables.get(ENV_RUN_ID) or variables.get(ENV_VOLUME) or cfg.launch.volume)
    return verified.choose(output_dir, is_main=is_main) if auto else None


def run_training(cfg: Any, *, env: Env | None = None, stream: TextIO | None = None,
                 watcher: PreemptionWatcher | None = None, extra_callbacks: list[Any] | None = None) -> int:
    """Train ``cfg``; ``watcher`` is the caller's already-installed signal watcher, else one is installed here.

    ``extra_callbacks`` are added last: a host that runs the runtime in-process (the Ray Train worker) uses them to
    hand each published checkpoint to its own checkpoint store.
    """
    env = env or read_env()
    stream = stream or sys.stdout
    if watcher is not None:
        return _run(cfg, env, watcher, stream, extra_callbacks or [])
    with PreemptionWatcher() as own:
        return _run(cfg, env, own, stream, extra_callbacks or [])


def _say(stream: TextIO, env: Env, line: str) -> None:
    if env.is_main:
        print(f"mudpuppy: {line}", file=stream, flush=True)


def _run(cfg: Any, env: Env, watcher: Any, stream: TextIO, extra_callbacks: list[Any]) -> int:
    started = time.monotonic()
    from mudpuppy.runtime.parallel.deepspeed import keep_out_unless_configured

    keep_out_unless_configured(cfg)  # before transformers/accelerate look for it
    output_dir = Path(cfg.output_dir)
    from mudpuppy.runtime.model import build_model, resolve_precision

    precision = resolve_precision(cfg)
    _quiet_libraries()
    from mudpuppy.runtime.train.args import plan_training

    # trainer settings are checked before minutes of tokenization, not after
    plan_training(cfg, precision=precision, env=env, train_rows=1,
                  has_eval=bool(cfg.val_set_size or cfg.test_datasets))
    from mudpuppy.runtime.checkpoints.completion import find_completion, volume_url

    # a relaunch of a finished run (a retry after the last upload, a late requeue, the same command typed
    # again) says so and leaves everything as it is: checked once the config is known to be valid, before
    # anything is read, built or written
    finished = find_completion(cfg, output_dir)
    if finished is not None:
        _say(stream, env, finished.line(output_dir, volume_url(cfg)))
        return EXIT_OK
    from mudpuppy.runtime.seeding import seed_everything, seed_of

    seed_everything(seed_of(cfg), device=precision.device)  # before anything random is built or drawn

    from mudpuppy.runtime.data.distributed import prepare_datasets_on_ranks
    from mudpuppy.runtime.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(cfg)
    processor = None
    from mudpuppy.runtime.data.multimodal import is_multimodal

    streamed = bool(cfg.pretraining_dataset)
    if streamed:  # read while training, never tokenized ahead (runtime.data.streaming)
        from mudpuppy.runtime.data.streaming import planned_rows, prepare_streamed

        train_ds, eval_ds = prepare_streamed(cfg, tokenizer)
    elif is_multimodal(cfg):  # message rows kept whole; the processor renders them per batch (no tokenizing here)
        from mudpuppy.runtime.data import multimodal
        from mudpuppy.runtime.model.multimodal import load_processor

        processor = load_processor(cfg, tokenizer)
        train_ds, eval_ds, _ = multimodal.build(cfg, processor)
    else:
        train_ds, eval_ds = prepare_datasets_on_ranks(cfg, tokenizer, env)
    train_rows = planned_rows(cfg, env.world_size) if streamed else len(train_ds) if train_ds is not None else 0
    if train_ds is None or train_rows == 0:
        raise UserError("datasets: no training rows left after tokenization",
                        hint="check the dataset paths/types and sequence_len")
    if watcher.requested:
        _say(stream, env, "preempted before training started; nothing new to save")
        mark_requeue(env.rank)
        return EXIT_REQUEUE

    from mudpuppy.runtime import parallel

    zero3_init = parallel.before_model_load(cfg, env, precision)  # noqa: F841 (kept alive while loading)
    # again: model and adapter init must not depend on what the data stage drew (a cache hit draws nothing)
    seed_everything(seed_of(cfg), device=precision.device)
    model, kernels = build_model(cfg, tokenizer, precision)
    model = parallel.prepare_model(model, cfg, env)
    for name in kernels:
        _say(stream, env, name)

    from transformers import EarlyStoppingCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_callback import ProgressCallback as HFProgress

    from mudpuppy.runtime.checkpoints.atomic import clear_staging
    from mudpuppy.runtime.train.args import apply_env
    from mudpuppy.runtime.train.callbacks import (
        EndReachedCallback,
        LossWatchdogCallback,
        NothingLeftToTrain,
        PreemptionCallback,
        ProgressCallback,
        SaveFirstStepCallback,
    )
    from mudpuppy.runtime.train.collator import build_collator
    from mudpuppy.runtime.train.mm_collator import build_mm_collator
    from mudpuppy.runtime.train.trainer import MudpuppyTrainer

    plan = plan_training(cfg, precision=precision, env=env, train_rows=train_rows, has_eval=eval_ds is not None)
    apply_env(plan.env_vars)
    try:
        training_args = TrainingArguments(**plan.args)
    except ValueError as exc:
        raise UserError(f"trainer settings rejected by transformers: {str(exc).splitlines()[0]}") from None

    from mudpuppy.runtime.checkpoints.sync_callback import VolumeSyncCallback

    # restores a newer verified checkpoint from the volume (if any) before resume_checkpoint() looks locally
    volume = VolumeSyncCallback.for_run(cfg, output_dir, is_main=env.is_main, save_total_limit=plan.save_total_limit)
    preemption = PreemptionCallback(watcher)
    callbacks: list[Any] = [ProgressCallback(output_dir, stream=stream), preemption, volume]
    if cfg.loss_watchdog_threshold is not None:
        callbacks.append(LossWatchdogCallback(cfg.loss_watchdog_threshold, cfg.loss_watchdog_patience or 3))
    if cfg.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    if cfg.save_first_step:
        callbacks.append(SaveFirstStepCallback())
    callbacks.extend(extra_callbacks)
    callbacks.append(EndReachedCallback())

    from mudpuppy.runtime.rl import build_rl_trainer, is_rl

    if is_rl(cfg):  # DPO/KTO/ORPO/SimPO/GRPO/reward: TRL's trainer behind the same checkpoint machinery
        trainer = build_rl_trainer(cfg, model=model, tokenizer=tokenizer, train_dataset=train_ds,
                                   eval_dataset=eval_ds, plan=plan, callbacks=callbacks, device=precision.device)
    else:
        trainer = MudpuppyTrainer(
            model=model,
            args=training_args,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            data_collator=build_collator(cfg, tokenizer) if processor is None else build_mm_collator(cfg, processor),
            processing_class=tokenizer if processor is None else processor,
            callbacks=callbacks,
            save_total_limit=plan.save_total_limit,
            loraplus=plan.loraplus,
            constant_lr=plan.constant_lr,
            embedding_lr=plan.embedding_lr,
            offload_activations=plan.offload_activations,
            muon=plan.muon,
        )
    parallel.prepare_trainer(trainer, cfg, env)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(HFProgress)

    resume = resume_checkpoint(cfg, output_dir, is_main=env.is_main)
    if env.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        clear_staging(output_dir)
    # ZeRO-3 leaves each rank a local slice; ds_numel is the parameter's full size
    trainable = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)
    total = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    shown = "streamed" if streamed else train_rows
    _say(stream, env, f"{shown} train rows, {len(eval_ds) if eval_ds is not None else 0} eval rows, "
                      f"{plan.total_steps} steps, {precision.mode} on {precision.device}, "
                      f"{trainable:,}/{total:,} params trainable"
                      + (f", resuming from {resume}" if resume else "")
                      + f" (setup {time.monotonic() - started:.1f}s)")

    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
    except NothingLeftToTrain as end:
        _say(stream, env, f"{resume} is at step {end.step}, the last one: writing the final outputs from it, "
                          "training nothing")
        metrics = {}
    if preemption.preempted:
        volume.close()  # the preemption checkpoint must reach the volume before we exit
        _say(stream, env, f"checkpoint saved at step {trainer.state.global_step}; exiting {EXIT_REQUEUE} for requeue")
        mark_requeue(env.rank)
        return EXIT_REQUEUE

    from mudpuppy.runtime.output import save_final

    if cfg.include_tokens_per_second and metrics.get("train_runtime"):
        # Axolotl's end-of-training throughput: real (non-pad) tokens seen over the training wall time
        metrics["train_tokens_per_second"] = trainer.state.num_input_tokens_seen / metrics["train_runtime"]
        _say(stream, env, f"train_tokens_per_second: {metrics['train_tokens_per_second']:.1f}")
    save_final(trainer, cfg, output_dir, metrics)
    volume.finish()
    if trainer.args.should_save:  # last: from here on a relaunch finds the run complete and does nothing
        from mudpuppy.runtime.checkpoints.completion import mark_complete

        mark_complete(output_dir, trainer.state.global_step)
    _say(stream, env, f"done: {output_dir}")
    return EXIT_OK


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import warnings

    # transformers 5 renames gradient_checkpointing and warns from inside Trainer even when it is off
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_warning()
    except ImportError:
        pass
    # one progress line per logging step is ours; per-map progress bars from datasets only bury it
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
