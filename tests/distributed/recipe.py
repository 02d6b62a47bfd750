"""Shared by the recipe-level distributed tests: a tiny config, one run of ``run_training``, its logged losses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.distributed.conftest import REPO, torchrun
from tests.fixtures.tiny import EXAMPLES

HERE = Path(__file__).resolve().parent


def config(out: Path, **overrides: Any) -> dict[str, Any]:
    """FSDP2 by default (``fsdp_version=None, fsdp_config=None`` drop it); a None override removes a key.

    ``MUDPUPPY_TEST_BF16=1`` runs the configs in bf16 (CPU autocast) so dtype faults surface without a GPU.
    """
    cfg: dict[str, Any] = {
        "base_model": str(EXAMPLES / "tiny-llama"), "reinit_weights": True, "seed": 7,
        "datasets": [{"path": str(EXAMPLES / "data" / "alpaca_tiny.jsonl"), "type": "alpaca"}],
        "sequence_len": 64, "micro_batch_size": 1, "gradient_accumulation_steps": 1, "max_steps": 4,
        "learning_rate": 0.005, "optimizer": "adamw_torch", "lr_scheduler": "constant", "logging_steps": 1,
        "save_steps": 2, "bf16": os.environ.get("MUDPUPPY_TEST_BF16") == "1", "output_dir": str(out),
        "fsdp_version": 2,
        "fsdp_config": {"fsdp_state_dict_type": "SHARDED_STATE_DICT", "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                        "fsdp_transformer_layer_cls_to_wrap": "LlamaDecoderLayer", "reshard_after_forward": True},
    }
    cfg.update(overrides)
    return {k: v for k, v in cfg.items() if v is not None}


def train(tmp: Path, name: str, cfg: dict[str, Any], nproc: int = 2, env: dict[str, str] | None = None,
          timeout: float = 240) -> dict[str, Any]:
    """Run the recipe; the report holds the exit code, the wrapper type and (2 ranks) the torchrun output."""
    path = tmp / f"{name}.yml"
    path.write_text(yaml.safe_dump(cfg))
    report = tmp / f"{name}.json"
    if nproc == 1:
        proc = subprocess.run([sys.executable, str(HERE / "train_run.py"), str(path), str(report)], cwd=REPO,
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})})
        assert proc.returncode == 0, proc.stderr[-4000:]
    else:
        proc = torchrun(HERE / "train_run.py", str(path), str(report), nproc=nproc, timeout=timeout, env=env)
    return {**json.loads(report.read_text()), "output": proc.stdout + proc.stderr}


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}
