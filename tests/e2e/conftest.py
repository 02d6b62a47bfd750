"""Configs for end-to-end runs on the shipped tiny Llama (weights from its config) and tiny datasets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.tiny import EXAMPLES

REPO = Path(__file__).resolve().parents[2]
# MUDPUPPY_TEST_BF16=1 reruns these configs in bf16 (CPU autocast) so dtype faults surface without a GPU
TEST_BF16 = os.environ.get("MUDPUPPY_TEST_BF16") == "1"


def base_config(out: Path, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "base_model": str(EXAMPLES / "tiny-llama"),
        "reinit_weights": True,
        "seed": 7,
        "datasets": [{"path": str(EXAMPLES / "data" / "alpaca_tiny.jsonl"), "type": "alpaca"}],
        "sequence_len": 128,
        "sample_packing": True,
        "adapter": "lora",
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.1,
        "lora_target_linear": True,
        "micro_batch_size": 2,
        "gradient_accumulation_steps": 2,
        "max_steps": 6,
        "learning_rate": 0.005,
        "optimizer": "adamw_torch",
        "lr_scheduler": "cosine",
        "warmup_steps": 1,
        "logging_steps": 1,
        "save_steps": 2,
        "bf16": TEST_BF16,
        "output_dir": str(out),
    }
    cfg.update(overrides)
    return {k: v for k, v in cfg.items() if v is not None}


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_runtime(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 180,
                prelude: str = "") -> subprocess.CompletedProcess[str]:
    """``python -m mudpuppy.runtime ARGS`` in a child process (optionally after ``prelude`` Python code)."""
    code = prelude + "\nimport sys\nfrom mudpuppy.runtime.entry import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, cwd=REPO)


@pytest.fixture
def tiny_cfg(tmp_path: Path):
    def make(name: str = "run", **overrides: Any) -> tuple[Path, dict[str, Any]]:
        cfg = base_config(tmp_path / name, **overrides)
        return write_config(tmp_path / f"{name}.yml", cfg), cfg

    return make
