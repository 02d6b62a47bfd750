"""When the Triton kernels run: on CUDA tensors with ``triton`` importable, or under Triton's interpreter.

``triton`` is optional (CPU installs don't have it): it is only imported here, lazily, and only the first time a
kernel asks. ``TRITON_INTERPRET=1`` (read by Triton when a kernel is defined, so it must be set before the
``triton_*`` kernel modules are first imported) runs the same kernels on CPU tensors, which is how CI checks them
against the pure-torch references without a GPU. ``MUDPUPPY_TRITON=0`` forces the pure-torch paths everywhere.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch


@functools.cache
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def use_triton(t: torch.Tensor) -> bool:
    """True when ``t`` should go through the Triton kernel rather than the pure-torch path."""
    if os.environ.get("MUDPUPPY_TRITON", "1") == "0":
        return False
    if not (t.is_cuda or (interpreting() and t.device.type == "cpu")):
        return False
    return triton_available()


def num_programs(t: torch.Tensor, cap: int) -> int:
    """Persistent-kernel grid size: one program per SM on CUDA, a few under the interpreter."""
    if t.is_cuda:
        return max(1, min(cap, torch.cuda.get_device_properties(t.device).multi_processor_count))
    return max(1, min(cap, 4))


SILU, GELU_TANH = 0, 1


def glu_act_kind(act: object) -> int | None:
    """Which activation the GLU kernel implements ``act`` is (SiLU or tanh-GELU); None = use the torch path."""
    name = type(act).__name__
    if isinstance(act, torch.nn.SiLU) or name == "SiLUActivation":
        return SILU
    if (isinstance(act, torch.nn.GELU) and act.approximate == "tanh") or name in ("PytorchGELUTanh", "GELUTanh"):
        return GELU_TANH
    return None
