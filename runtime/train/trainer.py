"""HF ``Trainer`` with mudpuppy's checkpoint protocol, token counting, LoRA+ and the constant-tail cosine.

Only a few hooks change: checkpoints are staged and published atomically (``runtime.checkpoints.atomic``),
the collator's real-token count feeds tokens/s, ``loraplus_lr_ratio`` builds peft's LoRA+ optimizer,
``embedding_lr``/``embedding_lr_scale`` put embeddings and the LM head in their own param group (Axolotl's
grouping), ``gradient_checkpointing: offload`` keeps saved activations in CPU memory (torch's
``save_on_cpu``), ``optimizer: muon`` builds Muon + AdamW (``runtime.train.muon``), and
``cosine_constant_lr_ratio`` gets its schedule. Everything else is stock transformers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from transformers import Trainer

from mudpuppy.runtime.checkpoints.atomic import rotate, staging_root
from mudpuppy.runtime.checkpoints.nodes import publish_across_nodes
from mudpuppy.runtime.train.collator import REAL_TOKENS_KEY


class MudpuppyTrainer(Trainer):
    def __init__(self, *args: Any, save_total_limit: int | None = None, loraplus: dict[str, float] | None = None,
                 constant_lr: tuple[float, float] | None = None, embedding_lr: tuple[str, float] | None = None,
                 offload_activations: bool = False, muon: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mp_muon = muon
        self.mp_save_total_limit = save_total_limit
        self.mp_loraplus = loraplus
        self.mp_embedding_lr = embedding_lr
        self.mp_offload_activations = offload_activations
        self.mp_constant_lr = constant_lr  # (cosine_min_lr_ratio, cosine_constant_lr_ratio)
        self.published: list[Path] = []

    def _move_model_to_device(self, model: Any, device: Any) -> None:
        # FSDP cpu_ram_efficient_loading: ranks other than 0 hold a meta-device skeleton that accelerate fills with
        # rank 0's weights when it shards the model; on CPU the Trainer does not know FSDP yet and would .to() it
        if any(p.is_meta for p in model.parameters()):
            return
        super()._move_model_to_device(model, device)

    # ---------------------------------------------------------------- checkpoints
    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = Path(self._get_output_dir(trial=trial))
        staging = staging_root(run_dir)
        def staged_output_dir(trial: Any = None) -> str:
            return str(staging)

        self._get_output_dir = staged_output_dir  # type: ignore[method-assign]
        try:
            super()._save_checkpoint(model, trial)
        finally:
            del self._get_output_dir
        step = self.state.global_step

        def after_publish(final: Path) -> None:
            self.published.append(final)
            best = None
            if self.state.best_global_step:
                candidate = run_dir / f"checkpoint-{self.state.best_global_step}"
                if candidate.exists():
                    self.state.best_model_checkpoint = str(candidate)
                    best = candidate
            rotate(run_dir, self.mp_save_total_limit, keep=best)

        # every node's shards committed to the volume before rank 0 writes the manifest (runtime.checkpoints.nodes)
        publish_across_nodes(staging, run_dir, step, writer=self.args.should_save, agree=self._all_ok,
                             barrier=self._barrier, after_publish=after_publish)

    def _all_ok(self, ok: bool) -> bool:
        """True on every rank when ``ok`` is True on every rank (a collective, so also a barrier)."""
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return ok
        flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=self.args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def _barrier(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.barrier()

    # ---------------------------------------------------------------- token counting
    def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        inputs.pop(REAL_TOKENS_KEY, None)
        return super().compute_loss(model, inputs, *args, **kwargs)

    def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if not self.mp_offload_activations:
            return super().training_step(model, inputs, *args, **kwargs)
        import torch

        with torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available()):
            return super().training_step(model, inputs, *args, **kwargs)

    def prediction_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        inputs = {k: v for k, v in inputs.items() if k != REAL_TOKENS_KEY}
        return super().prediction_step(model, inputs, *args, **kwargs)

    def _track_num_input_tokens(self, inputs: dict[str, Any]) -> None:
        import torch

        if REAL_TOKENS_KEY not in inputs:
            super()._track_num_input_tokens(inputs)
            return
        tokens = torch.as_tensor(inputs[REAL_TOKENS_KEY], device=self.args.device, dtype=torch.int64)
        self.state.num_input_tokens_seen += int(self.accelerator.gather(tokens).sum().item())

    # ---------------------------------------------------------------- optimizer / schedule
    def create_optimizer(self, model: Any = None) -> Any:
        if self.optimizer is None and self.mp_muon:
            from mudpuppy.runtime.train.muon import build_muon_optimizer

            self.optimizer = build_muon_optimizer(self.model, self.args,
                                                  set(self.get_decay_parameter_names(self.model)))
            return self.optimizer
        if self.optimizer is None and self.mp_embedding_lr is not None:
            return self._create_embedding_lr_optimizer()
        if self.mp_loraplus is None or self.optimizer is not None:
            return super().create_optimizer(*([model] if model is not None else []))
        from peft.optimizers import create_loraplus_optimizer

        opt_model: Any = self.model
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        lr = optimizer_kwargs.pop("lr", self.args.learning_rate)
        self.optimizer = create_loraplus_optimizer(
            model=opt_model,
            optimizer_cls=optimizer_cls,
            lr=lr,
            loraplus_lr_ratio=self.mp_loraplus["ratio"],
            loraplus_lr_embedding=self.mp_loraplus["embedding"],
            weight_decay=self.args.weight_decay,
            **optimizer_kwargs,
        )
        return self.optimizer

    def _create_embedding_lr_optimizer(self) -> Any:
        """Three groups as in Axolotl: decayed weights, embeddings + LM head (own lr, no decay), the rest."""
        opt_model: Any = self.model
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        lr = optimizer_kwargs.pop("lr", self.args.learning_rate)
        kind, value = self.mp_embedding_lr or ("scale", 1.0)
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[str, list[Any]] = {"decay": [], "embeddings": [], "no_decay": []}
        for name, param in opt_model.named_parameters():
            if not param.requires_grad:
                continue
            if is_embedding_parameter(name):
                groups["embeddings"].append(param)
            else:
                groups["decay" if name in decay else "no_decay"].append(param)
        settings = {"decay": (self.args.weight_decay, lr), "no_decay": (0.0, lr),
                    "embeddings": (0.0, lr * value if kind == "scale" else value)}
        param_groups = [{"params": params, "weight_decay": settings[key][0], "lr": settings[key][1]}
                        for key, params in groups.items() if params]
        self.optimizer = optimizer_cls(param_groups, lr=lr, **optimizer_kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        if self.mp_constant_lr is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        from torch.optim.lr_scheduler import LambdaLR

        min_ratio, constant_ratio = self.mp_constant_lr
        warmup = self.args.get_warmup_steps(num_training_steps)
        target: Any = self.optimizer if optimizer is None else optimizer
        self.lr_scheduler = LambdaLR(
            target,
            cosine_with_constant_tail(warmup, num_training_steps, min_ratio, constant_ratio),
        )
        self._created_lr_scheduler = True
        return self.lr_scheduler


def is_embedding_parameter(name: str) -> bool:
    """Axolotl's embedding group: token embeddings, the LM head, and peft's trainable copies of them."""
    return name.endswith("modules_to_save.default.weight") or "embed_tokens" in name or "lm_head" in name


def cosine_with_constant_tail(warmup: int, total: int, min_ratio: float, constant_ratio: float) -> Any:
    """Linear warmup, cosine decay to ``min_ratio`` reached at ``constant_ratio`` of training, then flat."""
    decay_end = max(int(total * constant_ratio), warmup + 1)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        if step >= decay_end:
            return min_ratio
        progress = (step - warmup) / max(1, decay_end - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
