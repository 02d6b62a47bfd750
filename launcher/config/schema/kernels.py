"""Switches for the fused ops in ``mudpuppy.kernels`` (and the Axolotl plugin names that map onto them)."""

from __future__ import annotations

from pydantic import Field

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
# Axolotl plugins (by integration package) mudpuppy loads without running: what will not happen.
UNSUPPORTED_PLUGINS = {
    "kernels": "MoE expert kernels (scattermoe/sonicmoe) are not applied; experts run transformers' own code",
    "densemixer": "DenseMixer's router gradient estimate is not applied",
    "diffusion": "diffusion-LM training is not implemented; the model trains as a plain causal LM",
    "expert_parallel": "experts are not sharded across ranks (no expert parallelism)",
    "grokfast": "Grokfast gradient filtering is not applied",
    "hatchery": "Axolotl's Hatchery rollout integration is not run",
    "kd": "the knowledge-distillation loss is not applied; the model trains on the labels only",
    "llm_compressor": "LLM Compressor's sparsity-preserving fine-tuning is not applied",
    "lm_eval": "lm-eval-harness benchmarks are not run after training",
    "mora": "MoRA adapters are not built",
    "nemo_gym": "NeMo Gym environments are not connected",
    "spectrum": "Spectrum's layer selection is not applied; every (adapter) parameter trains",
    "swanlab": "nothing is reported to SwanLab",
}


class KernelSection(Section):
    plugins: list[str] | None = Field(
        None, description="Axolotl plugin paths; Cut Cross Entropy and Liger map onto mudpuppy kernels, the rest "
                          "load with a warning.")
    cut_cross_entropy: bool | None = None
    liger_fused_linear_cross_entropy: bool | None = None
    liger_rms_norm: bool | None = None
    liger_glu_activation: bool | None = None
    liger_cross_entropy: bool | None = None
    chunked_cross_entropy: bool | None = None
    chunked_cross_entropy_num_chunks: int | None = Field(None, gt=0)
    tiled_mlp: bool | None = None
    tiled_mlp_num_shards: int | None = Field(None, gt=0)
