"""``seed:`` applied to every random number generator a run draws from, at the points where it matters.

Why two calls: transformers' ``Trainer`` seeds only in its own constructor, after the model and the peft adapter
exist, so peft's LoRA A initialisation (``kaiming_uniform_`` on torch's global generator) used to start from an
unseeded state and every run of the same config got a different adapter. ``run_training`` therefore seeds at
start-up (covers tokenization and anything the data stage draws), and again right before the model is built, so the
model and adapter initialisation never depend on how much randomness the data stage consumed (a prepared-dataset
cache hit skips tokenization entirely).

Dropout and data order then follow from the same seed: the trainer reseeds in its constructor, the sampler gets
``data_seed`` = ``seed`` explicitly (``runtime.train.args``), and a resumed run gets every generator's state back
from the checkpoint's ``rng_state.pth``.

On CPU, ``torch.use_deterministic_algorithms(True, warn_only=True)`` is switched on as well: CPU kernels are
deterministic for a fixed thread count, and the flag turns any op without a deterministic implementation into a
warning naming it, rather than a silent difference. On CUDA it stays off (it would need
``CUBLAS_WORKSPACE_CONFIG`` and slows training, and flash-attention's backward ignores it); see the README's
reproducibility section for what that means.
"""

from __future__ import annotations

from typing import Any

DEFAULT_SEED = 42  # Axolotl's default when ``seed`` is unset


def seed_of(cfg: Any) -> int:
    seed = getattr(cfg, "seed", None)
    return DEFAULT_SEED if seed is None else int(seed)


def seed_everything(seed: int, *, device: str = "cpu") -> None:
    """Seed python's ``random``, numpy and torch (CPU and every CUDA device) through transformers' ``set_seed``."""
    import torch
    from transformers.trainer_utils import set_seed

    set_seed(seed)
    if device == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
