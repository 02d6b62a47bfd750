"""Axolotl keys mudpuppy knows but does not act on, each with what will not happen.

Every schema field takes effect in the runtime (``tests/unit/config/test_every_field.py`` proves it); an Axolotl
key that would not is kept out of the schema and listed here instead, so it loads with one warning naming the
consequence. Keys not listed get the generic "mudpuppy does not implement it" warning.
"""

from __future__ import annotations

TOP_LEVEL: dict[str, str] = {
    "dp_shard_size": "FSDP shards over every rank; there is no hybrid shard/replicate split",
    "dp_replicate_size": "FSDP shards over every rank; there is no hybrid shard/replicate split",
    "liger_rope": "rotary embeddings stay transformers' own (two fused elementwise ops already); no Liger kernel",
    "liger_layer_norm": "LayerNorm stays torch's native fused layer_norm; no Liger kernel",
    "include_tkps": "tokens/s is always logged each step (tokens_per_second in metrics.jsonl); nothing to switch",
}
DATASET: dict[str, str] = {
    "field_human": "no Axolotl code reads it either; map roles with roles: / message_property_mappings:",
    "field_model": "no Axolotl code reads it either; map roles with roles: / message_property_mappings:",
    "input_transform": "it selects the variant of Axolotl's messages strategy, which mudpuppy does not implement",
    "logprobs_field": "knowledge-distillation logprobs are not read (Axolotl's KD plugin is not implemented)",
}
