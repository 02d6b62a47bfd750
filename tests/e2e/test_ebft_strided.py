"""``mudpuppy train`` of an EBFT strided config (Axolotl's llama-1b-ebft-strided.yaml shape: raw text through
``ebft_pretrain.transform``, LoRA, whitening, RLOO) on the tiny Llama for a few CPU steps: it completes, writes
its metrics, and the cross-entropy term on the documents falls. The algorithm itself is checked against
separate per-block forwards in tests/unit/rl/test_ebft_strided.py."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures.tiny import EXAMPLES

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_strided_train_completes_and_ce_falls(tmp_path: Path) -> None:
    cfg = {
        "base_model": str(EXAMPLES / "tiny-llama"), "reinit_weights": True, "seed": 7,
        "rl": "ebft",
        "ebft": {"mode": "strided", "stride": 6, "context_length": 6, "generate_max_len": 4,
                 "n_samples_per_prompt": 4, "temperature": 1.0, "top_p": 1.0, "feature_layers": [0.5, 1.0],
                 "embed_method": "last_token", "use_whitening": True, "alignment_coef": 1.0, "diversity_coef": 1.0,
                 "rl_coef": 1.0, "ce_coef": 0.1, "advantage_estimator": "rloo"},
        "datasets": [{"path": str(ROOT / "tests" / "data" / "rl" / "toy_strided.jsonl"),
                      "type": "ebft_pretrain.transform"}],
        "special_tokens": {"pad_token": "</s>"},
        "sequence_len": 40, "micro_batch_size": 2, "gradient_accumulation_steps": 1, "max_steps": 6,
        "learning_rate": 0.01, "optimizer": "adamw_torch", "lr_scheduler": "constant",
        "adapter": "lora", "lora_r": 8, "lora_alpha": 16, "lora_target_linear": True,
        "bf16": False, "val_set_size": 0.0, "logging_steps": 1, "save_steps": 100,
        "output_dir": str(tmp_path / "out"),
    }
    path = tmp_path / "strided.yml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "mudpuppy", "train", str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    logs = [r for r in map(json.loads, (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(logs) == 6
    assert all(math.isfinite(r["loss"]) and r["ebft/num_blocks"] == 6 for r in logs), logs
    ce = [r["ebft/ce_loss"] for r in logs]
    assert sum(ce[-2:]) / 2 < sum(ce[:2]) / 2 - 0.1, ce
    assert all(-2.0 <= r["ebft/alignment"] <= 2.0 for r in logs)
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_strided_structured_full_finetune_with_checkpointing(tmp_path: Path) -> None:
    """Prompt/completion rows (ebft_strided_structured.transform, Axolotl's llama-1b-ebft-strided-structured.yaml
    shape) on a full fine-tune (the feature network is a frozen copy of the start) with gradient checkpointing:
    anchors sit past each prompt, the CE term reads only completion tokens, the run completes."""
    import io

    from mudpuppy.launcher.config import load_config_text
    from mudpuppy.launcher.contract import EXIT_OK
    from mudpuppy.runtime.train.run import run_training

    cfg = {
        "base_model": str(EXAMPLES / "tiny-llama"), "reinit_weights": True, "seed": 7, "rl": "ebft",
        "ebft": {"mode": "strided", "stride": 4, "context_length": 4, "generate_max_len": 4, "n_samples_per_prompt": 2,
                 "min_completion_prefix": 2, "ce_coef": 0.03, "embed_method": "mean_pooling"},
        "datasets": [{"path": str(ROOT / "tests" / "data" / "rl" / "inputs" / "ebft_structured.jsonl"),
                      "type": "ebft_strided_structured.transform"}],
        "special_tokens": {"pad_token": "</s>"}, "sequence_len": 48, "micro_batch_size": 2, "max_steps": 2,
        "learning_rate": 1e-3, "gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": True},
        "bf16": False, "logging_steps": 1, "save_strategy": "no", "output_dir": str(tmp_path / "out"),
    }
    config = load_config_text(yaml.safe_dump(cfg), name="structured.yml").config
    assert run_training(config, stream=io.StringIO()) == EXIT_OK
    logs = [r for r in map(json.loads, (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(logs) == 2 and all(r["ebft/num_blocks"] > 0 and math.isfinite(r["ebft/ce_loss"]) for r in logs), logs
