"""Issue 20 "Also": dtype faults surface on CPU when the recipe runs in bf16 (CPU autocast), not only fp32.

A tiny LoRA run with packing, micro_batch_size 2, every LoRA kernel, tiled MLP and the fused loss trains in bf16
through the real recipe; the same run with the kernels off is the reference (same data, same seed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mudpuppy.runtime.entry import run_location

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
KERNELS = {"lora_mlp_kernel": True, "lora_qkv_kernel": True, "lora_o_kernel": True, "tiled_mlp": True,
           "tiled_mlp_num_shards": 2, "cut_cross_entropy": True}


def _losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_bf16_lora_packed_run_with_kernels_trains_like_without(tiny_cfg, capsys) -> None:
    common = {"bf16": True, "lora_dropout": 0.0, "max_steps": 6, "save_strategy": "no", "save_steps": None,
              "gradient_accumulation_steps": 1, "learning_rate": 0.01, "warmup_steps": 0}
    path, cfg = tiny_cfg("bf16_kernels", **common, **KERNELS)
    assert run_location(str(path)) == 0
    printed = capsys.readouterr().out
    assert "bf16 on cpu" in printed and "kernel lora_mlp" in printed and "kernel tiled_mlp" in printed
    ref_path, ref_cfg = tiny_cfg("bf16_plain", **common)
    assert run_location(str(ref_path)) == 0
    got, want = _losses(Path(cfg["output_dir"])), _losses(Path(ref_cfg["output_dir"]))
    assert len(got) == len(want) == 6 and all(math.isfinite(x) for x in got)
    assert got[-1] < got[0]  # it learns in bf16
    for a, b in zip(got, want, strict=True):  # bf16 rounding differs between the paths, not the function
        assert abs(a - b) < 0.05 * max(1.0, abs(b)), (got, want)
    adapter = Path(cfg["output_dir"]) / "adapter_model.safetensors"
    assert adapter.is_file()
