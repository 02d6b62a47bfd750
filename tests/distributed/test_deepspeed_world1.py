"""Issue 20.4: ZeRO-3 with CPU offload on one process started without torchrun (the one-GPU offload case).

Two faults stopped it: ``zero.Init`` found no process group and tried MPI discovery (no mpi4py: crash), and the
``zero3_offload`` preset offloads the optimizer with no ``optimizer`` section, so DeepSpeed refused the Trainer's
torch optimizer. The run goes through the real recipe in a plain ``python`` process (no RANK/MASTER_* variables)
and must train, step the optimizer and save, without JIT-building any DeepSpeed op.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.distributed.recipe import config, losses, train
from tests.fixtures.tiny import build_tiny_model_with_weights

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_zero3_offload_preset_trains_in_one_process_without_torchrun(tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    build_tiny_model_with_weights(tmp_path / "model")
    ext = tmp_path / "ext"
    ext.mkdir()
    cfg = config(tmp_path / "out", base_model=str(tmp_path / "model"), reinit_weights=None, fsdp_version=None,
                 fsdp_config=None, deepspeed="zero3_offload", max_steps=2, save_steps=None, save_strategy="no",
                 optimizer="adamw_torch_fused")
    report = train(tmp_path, "zero3", cfg, nproc=1, env={"TORCH_EXTENSIONS_DIR": str(ext)})
    assert report["exit"] == 0, report["output"][-3000:]
    assert report["wrapper"] == "DeepSpeedEngine" and report["distributed_type"].endswith("DEEPSPEED"), report
    assert sorted(losses(tmp_path / "out")) == [1, 2]
    assert list(ext.iterdir()) == [], "a DeepSpeed op was JIT-built"
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["model_type"] == "llama" and (tmp_path / "out" / "model.safetensors").is_file()
