"""Which kernels a config asks for, with Axolotl's plugin spellings folded onto mudpuppy's keys.

Kept free of torch so the launcher can show the resolved switches without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mudpuppy.launcher.config.schema.kernels import CCE_PLUGINS


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if isinstance(cfg, dict):
        return cfg.get(key, default)
    value = getattr(cfg, key, default)
    return default if value is None else value


@dataclass(frozen=True)
class KernelSwitches:
    fused_linear_ce: bool = False
    lora_mlp: bool = False
    lora_qkv: bool = False
    lora_o: bool = False
    tiled_mlp: bool = False
    tiled_mlp_num_shards: int | None = None
    rms_norm: bool = False
    glu_activation: bool = False
    ce_num_chunks: int | None = None

    def any(self) -> bool:
        return any(v for k, v in vars(self).items() if isinstance(v, bool))


def resolve_switches(cfg: Any) -> KernelSwitches:
    """Fold every spelling of the same kernel into one switch.

    The Cut Cross Entropy plugin defaults ``cut_cross_entropy`` to true, as Axolotl's does. CCE, Liger's fused
    linear CE, Liger's plain CE and Axolotl's chunked CE all exist to avoid the full fp32 logits, so they all map
    to the one fused linear cross-entropy here (which never materialises logits at all).
    """
    plugins = set(_get(cfg, "plugins") or [])
    cce = _get(cfg, "cut_cross_entropy")
    if cce is None and plugins & CCE_PLUGINS:
        cce = True
    fused = bool(cce or _get(cfg, "liger_fused_linear_cross_entropy") or _get(cfg, "liger_cross_entropy")
                 or _get(cfg, "chunked_cross_entropy"))
    return KernelSwitches(
        fused_linear_ce=fused,
        lora_mlp=bool(_get(cfg, "lora_mlp_kernel")),
        lora_qkv=bool(_get(cfg, "lora_qkv_kernel")),
        lora_o=bool(_get(cfg, "lora_o_kernel")),
        tiled_mlp=bool(_get(cfg, "tiled_mlp")),
        tiled_mlp_num_shards=_get(cfg, "tiled_mlp_num_shards"),
        ce_num_chunks=_get(cfg, "chunked_cross_entropy_num_chunks"),
        rms_norm=bool(_get(cfg, "liger_rms_norm")),
        glu_activation=bool(_get(cfg, "liger_glu_activation")),
    )
