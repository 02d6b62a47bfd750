"""Resolve bf16/fp16/tf32 (with ``auto``) against the device actually present.

A config written for an H100 must still run on a laptop, so ``auto`` means "the fastest exact-enough thing this
device has": bf16 on CUDA devices that support it natively, else fp16 (T4/V100 only emulate bf16, several times
slower, so emulation does not count), fp32 on CPU. Explicit settings are kept as asked, except
fp16 on CPU, which torch cannot train, and which is a user error with the fix in the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mudpuppy.launcher.errors import UserError


@dataclass(frozen=True)
class Precision:
    mode: str  # "bf16" | "fp16" | "fp32"
    tf32: bool
    device: str  # "cuda" | "cpu" | "mps"

    @property
    def torch_dtype(self) -> Any:
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self.mode]


def detect_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_precision(cfg: Any, device: str | None = None, *, bf16_supported: bool | None = None,
                      tf32_supported: bool | None = None) -> Precision:
    device = device or detect_device()
    if device == "cuda":
        import torch

        if bf16_supported is None:
            bf16_supported = bool(torch.cuda.is_bf16_supported(including_emulation=False))
        if tf32_supported is None:
            tf32_supported = torch.cuda.get_device_capability()[0] >= 8
    else:
        bf16_supported = bool(bf16_supported)
        tf32_supported = False

    asked = cfg.precision()
    if asked == "auto":
        mode = ("bf16" if bf16_supported else "fp16") if device == "cuda" else "fp32"
    elif asked == "fp16" and device != "cuda":
        raise UserError("fp16: true needs a CUDA GPU; on CPU remove fp16 (fp32 is used) or set bf16: true")
    elif asked == "bf16" and device == "cuda" and not bf16_supported:
        raise UserError("bf16: true but this GPU has no bf16 support; use bf16: auto or fp16: true")
    else:
        mode = asked
    tf32 = cfg.tf32 is True or (cfg.tf32 == "auto" and bool(tf32_supported))
    if cfg.tf32 is True and not tf32_supported:
        tf32 = False  # tf32 is a no-op off Ampere+ CUDA; transformers would raise instead
    return Precision(mode=mode, tf32=tf32, device=device)
