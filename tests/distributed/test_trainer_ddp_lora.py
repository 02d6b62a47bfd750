"""A LoRA run through the real recipe on 2 gloo ranks (plain DDP): what every multi-process run used to carry.

transformers turns DDP's ``find_unused_parameters`` on for any model without gradient checkpointing, which costs a
graph traversal per step and makes torch warn on every run; and accelerate imported DeepSpeed (its accelerator
probe prints a warning) even when the config never asked for it. Python warnings are left on here (the shared
torchrun helper silences them) so torch's own warning is what the test reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.distributed.recipe import config, losses, train

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
LORA = {"adapter": "lora", "lora_r": 4, "lora_alpha": 8, "lora_target_linear": True}


@pytest.fixture(scope="module")
def lora_ddp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ddp_lora")
    cfg = config(tmp / "out", fsdp_version=None, fsdp_config=None, save_steps=None, max_steps=3, **LORA)
    return tmp, train(tmp, "lora", cfg, env={"PYTHONWARNINGS": "default"})


def test_lora_ddp_runs_without_find_unused_parameters(lora_ddp: Any) -> None:
    tmp, report = lora_ddp
    assert report["exit"] == 0 and report["wrapper"] == "DistributedDataParallel", report
    assert report["find_unused_parameters"] is False
    assert sorted(losses(tmp / "out")) == [1, 2, 3]
    assert "find_unused_parameters=True" not in report["output"], report["output"][-3000:]


def test_run_without_deepspeed_key_never_imports_deepspeed(lora_ddp: Any) -> None:
    pytest.importorskip("deepspeed")  # installed, so accelerate would import it if we let it
    _, report = lora_ddp
    assert report["deepspeed_imported"] is False
    assert "real_accelerator" not in report["output"] and "Setting accelerator to" not in report["output"]
