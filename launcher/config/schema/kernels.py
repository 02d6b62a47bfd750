"""Switches for the fused ops in ``mudpuppy.kernels`` (and the Axolotl plugin names that map onto them)."""

from __future__ import annotations

from pydantic import Field, field_validator

from mudpuppy.launcher.config.schema.base import Section

# Axolotl enables these kernels through ``plugins:``; listing one switches on the matching keys' handling here.
CCE_PLUGINS = frozenset({
    "axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin",
    "axolotl.integrations.cut_cross_entropy",
})
LIGER_PLUGINS = frozenset({
    "axolotl.integrations.liger.LigerPlugin",
    "axolotl.integrations.liger.plugin.LigerPlugin",
    "axolotl.integrations.liger",
})
KNOWN_PLUGINS = CCE_PLUGINS | LIGER_PLUGINS


class KernelSection(Section):
    plugins: list[str] | None = Field(
        None, description="Axolotl plugin paths; the Cut Cross Entropy and Liger plugins map onto mudpuppy kernels.")
    cut_cross_entropy: bool | None = None
    liger_fused_linear_cross_entropy: bool | None = None
    liger_rms_norm: bool | None = None
    liger_glu_activation: bool | None = None
    liger_rope: bool | None = None
    liger_cross_entropy: bool | None = None
    liger_layer_norm: bool | None = None
    chunked_cross_entropy: bool | None = None
    chunked_cross_entropy_num_chunks: int | None = Field(None, gt=0)
    tiled_mlp: bool | None = None
    tiled_mlp_num_shards: int | None = Field(None, gt=0)

    @field_validator("plugins")
    @classmethod
    def _known_plugins(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if name not in KNOWN_PLUGINS:
                raise ValueError(
                    f"plugin {name!r} is not supported; mudpuppy maps only the Cut Cross Entropy and Liger plugins "
                    f"({', '.join(sorted(n for n in KNOWN_PLUGINS if n.endswith('Plugin')))}) onto its own kernels; "
                    "remove the entry")
        return value
