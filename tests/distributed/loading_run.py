"""``run_training`` under torchrun, recording per rank what issue 20 items 6, 7 and 9 are about.

Usage: loading_run.py CONFIG.yml REPORT_PREFIX  (writes REPORT_PREFIX.rank<N>.json on every rank)

* item 7: how often each rank tokenized (``pipeline.tokenize_entry`` calls) and how many rows it trained on;
* item 6: on which device each rank's freshly built model holds its parameters (meta = nothing materialised),
  and whether every full parameter at the first step equals the checkpoint on disk (rank 0's broadcast arrived);
* item 9: the dtype a projection's weight has inside forward (FSDP2's mixed-precision ``param_dtype``).
"""
from __future__ import annotations

import json
import sys
from typing import Any


def main() -> int:
    import torch.distributed as dist

    import mudpuppy.runtime.data.distributed as data_dist
    import mudpuppy.runtime.model as model_pkg
    from mudpuppy.launcher.config import load_config
    from mudpuppy.runtime.data import pipeline
    from mudpuppy.runtime.train import trainer as trainer_module
    from mudpuppy.runtime.train.run import run_training

    seen: dict[str, Any] = {"tokenize_calls": 0}
    cfg = load_config(sys.argv[1]).config

    tokenize = pipeline.tokenize_entry

    def counting_tokenize(*args: Any, **kwargs: Any) -> Any:
        seen["tokenize_calls"] += 1
        return tokenize(*args, **kwargs)

    pipeline.tokenize_entry = counting_tokenize

    prepare = data_dist.prepare_datasets_on_ranks

    def recording_prepare(*args: Any, **kwargs: Any) -> Any:
        train, evaluation = prepare(*args, **kwargs)
        seen["train_rows"] = len(train)
        seen["train_first_ids"] = list(train[0]["input_ids"][:8])
        return train, evaluation

    data_dist.prepare_datasets_on_ranks = recording_prepare

    build = model_pkg.build_model

    def recording_build(*args: Any, **kwargs: Any) -> Any:
        model, kernels = build(*args, **kwargs)
        seen["param_devices_after_load"] = sorted({p.device.type for p in model.parameters()})
        seen["param_dtype_after_load"] = str(next(model.parameters()).dtype)
        return model, kernels

    model_pkg.build_model = recording_build

    original_step = trainer_module.MudpuppyTrainer.training_step

    def training_step(self: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        if "forward_weight_dtype" in seen:
            return original_step(self, model, *args, **kwargs)
        from pathlib import Path

        import torch
        from safetensors.torch import load_file
        from torch.distributed.tensor import DTensor

        loaded_as = getattr(torch, seen["param_dtype_after_load"].removeprefix("torch."))
        # the checkpoint as rank 0 loaded it (bf16 runs round it; FSDP then keeps fp32 master copies)
        on_disk = {k: v.to(loaded_as) for k, v in load_file(str(Path(cfg.base_model) / "model.safetensors")).items()}
        worst = 0.0
        compared = 0
        for name, param in model.named_parameters():
            full = param.full_tensor() if isinstance(param, DTensor) else param.detach()
            if name in on_disk:
                worst = max(worst, float((full.float() - on_disk[name].float()).abs().max()))
                compared += 1
        seen["params_compared"], seen["max_diff_vs_checkpoint"] = compared, worst
        seen["dtensor"] = all(isinstance(p, DTensor) for p in model.parameters())
        proj = next(m for n, m in model.named_modules() if n.endswith("layers.0.self_attn.q_proj"))
        handle = proj.register_forward_pre_hook(
            lambda mod, _inp: seen.__setitem__("forward_weight_dtype", str(mod.weight.dtype)))
        try:
            return original_step(self, model, *args, **kwargs)
        finally:
            handle.remove()

    trainer_module.MudpuppyTrainer.training_step = training_step
    code = run_training(cfg)
    rank = dist.get_rank() if dist.is_initialized() else 0
    with open(f"{sys.argv[2]}.rank{rank}.json", "w") as fh:
        json.dump({"exit": code, **seen}, fh)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
