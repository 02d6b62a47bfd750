"""``run_training`` on a config (under torchrun or alone), recording whether the model the Trainer steps is sharded,
DDP's ``find_unused_parameters`` and whether ``deepspeed`` was imported.

Usage: train_run.py CONFIG.yml REPORT.json
"""
from __future__ import annotations

import json
import sys


def main() -> int:
    from mudpuppy.launcher.config import load_config
    from mudpuppy.runtime.train import trainer as trainer_module
    from mudpuppy.runtime.train.run import run_training

    seen: dict[str, object] = {}
    original = trainer_module.MudpuppyTrainer.training_step

    def training_step(self, model, *args, **kwargs):  # type: ignore[no-untyped-def]
        if "dtensor" not in seen:
            from torch.distributed.tensor import DTensor

            params = list(model.parameters())
            seen["dtensor"] = bool(params) and all(isinstance(p, DTensor) for p in params)
            seen["wrapper"] = type(model).__name__
            seen["find_unused_parameters"] = getattr(model, "find_unused_parameters", None)  # DDP's own flag
            seen["distributed_type"] = str(self.accelerator.distributed_type)
            inner = getattr(model, "module", model)
            cp = getattr(inner, "_mudpuppy_cp", None)
            if cp is not None:  # record the sequence length one rank really embeds vs the full batch width
                widths: list[int] = []
                handle = inner.get_input_embeddings().register_forward_hook(
                    lambda _m, _i, out: widths.append(int(out.shape[1])))
                try:
                    return original(self, model, *args, **kwargs)
                finally:
                    handle.remove()
                    seen["cp_local_len"] = widths[0]
                    seen["cp_full_len"] = int(cp.segments.shape[1])
        return original(self, model, *args, **kwargs)

    trainer_module.MudpuppyTrainer.training_step = training_step
    cfg = load_config(sys.argv[1]).config
    code = run_training(cfg)
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        with open(sys.argv[2], "w") as fh:
            json.dump({"exit": code, **seen, "deepspeed_imported": "deepspeed" in sys.modules
                       and sys.modules["deepspeed"] is not None}, fh)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
