"""The multimodal example on 2 gloo ranks, wrapped by DDP, by FSDP2 and by DeepSpeed ZeRO-2 (the vision tower
frozen inside the wrapped model): each trains, and their losses match a 1-process run of the same global batch
within the tolerance every parallel text run gets (gradients are averaged by an all-reduce, so not bit for bit)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.distributed.conftest import free_port
from tests.fixtures.tiny import EXAMPLES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
FSDP2 = {"fsdp_version": 2, "fsdp_config": {"fsdp_state_dict_type": "SHARDED_STATE_DICT",
                                            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                            "fsdp_transformer_layer_cls_to_wrap": "Gemma3DecoderLayer",
                                            "reshard_after_forward": True}}


def _run(root: Path, name: str, nproc: int, **changes: object) -> list[float]:
    cfg = yaml.safe_load((root / "examples/tiny-vision.yml").read_text())
    cfg.pop("save_steps")
    cfg.update(output_dir=f"outputs/{name}", num_epochs=2, save_strategy="no", **changes)
    (root / f"{name}.yml").write_text(yaml.safe_dump(cfg))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
                "127.0.0.1", "--master-port", str(free_port())] if nproc > 1 else [sys.executable]
    proc = subprocess.run([*launcher, "-m", "mudpuppy.runtime", f"{name}.yml"], cwd=root, capture_output=True,
                          text=True, timeout=400, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                                                       "MUDPUPPY_DIST_TIMEOUT": "90"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    rows = [json.loads(line) for line in (root / f"outputs/{name}/metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_ddp_fsdp2_and_zero2_train_the_vision_model_like_one_process(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    single = _run(tmp_path, "single", 1, micro_batch_size=8)  # the 2-rank runs' global batch: 2 x 4
    ddp = _run(tmp_path, "ddp", 2)
    fsdp = _run(tmp_path, "fsdp", 2, **FSDP2)
    zero2 = _run(tmp_path, "zero2", 2, deepspeed="zero2")
    assert len(single) == len(ddp) == len(fsdp) == len(zero2) == 2
    assert single[1] < single[0]
    for other in (ddp, fsdp, zero2):
        assert all(abs(a - b) < 1e-4 for a, b in zip(single, other, strict=True)), (single, other)
