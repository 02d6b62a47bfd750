"""``bench/gpu/run.sh --dry``: the GPU validation script for issue 20 keeps working without a GPU.

Every step runs its CPU-safe part (SDPA under transformers' flash path, bf16 weights in place of 4-bit, CPU
GradScaler, config-level DeepSpeed/placement checks); only the GPU-only training run skips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(420)


def test_gpu_script_dry_run_passes_every_cpu_safe_step(tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu" / "run.sh"), "--dry", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=400, cwd=REPO,
                          env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    status = {s["item"]: s["status"] for s in report["steps"]}
    assert status == {"1": "pass", "2": "pass", "3": "pass", "4": "pass", "5": "pass", "6+7": "pass",
                      "8": "pass", "9": "pass", "10": "pass", "e2e": "skip"}, report
    assert report["mode"] == "dry"
    table = (tmp_path / "results.md").read_text().splitlines()
    assert sum(line.startswith("| ") for line in table) == 1 + len(status)  # header + one row per step
