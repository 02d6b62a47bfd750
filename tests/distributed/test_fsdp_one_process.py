"""An FSDP config started as one plain process (`mudpuppy train`, no torchrun) trains instead of failing with
transformers' "Using fsdp only works in distributed training", and its sharded checkpoint is the kind two ranks
resume from (DCP reshards it): the 1 -> 2 process move `mudpuppy resume --nodes 2` relies on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.distributed.conftest import REPO, free_port
from tests.e2e.conftest import base_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

FSDP = {"fsdp_version": 2, "fsdp_config": {"state_dict_type": "SHARDED_STATE_DICT", "reshard_after_forward": True,
                                           "transformer_layer_cls_to_wrap": "LlamaDecoderLayer"}}


def _steps(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r and "step" in r]


def test_fsdp_config_trains_as_one_process_and_two_ranks_resume_its_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = base_config(out, max_steps=4, save_steps=2, lora_dropout=0.0, **FSDP)
    path = tmp_path / "fsdp.yml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MUDPUPPY_DIST_TIMEOUT": "90"}
    one = subprocess.run([sys.executable, "-m", "mudpuppy", "train", str(path)], capture_output=True, text=True,
                         timeout=300, env=env, cwd=REPO)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    ckpt = out / "checkpoint-4"
    assert (ckpt / "pytorch_model_fsdp_0" / ".metadata").is_file()
    assert len(list((ckpt / "pytorch_model_fsdp_0").glob("*.distcp"))) == 1  # one rank wrote it
    first = _steps(out)
    assert [s for s, _ in first] == [1, 2, 3, 4]

    # continue the same output_dir for two more steps on two ranks: the 1-shard checkpoint is loaded and resharded
    (out / "mudpuppy-outputs.json").unlink()  # the run is finished otherwise; max_steps grows below
    cfg["max_steps"] = 6
    path.write_text(yaml.safe_dump(cfg))
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                          "127.0.0.1", "--master-port", str(free_port()), "-m", "mudpuppy.runtime", str(path)],
                         capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    after = _steps(out)
    assert [s for s, _ in after][-2:] == [5, 6] and 1 not in [s for s, _ in after[len(first):]]
    assert len(list((out / "checkpoint-6" / "pytorch_model_fsdp_0").glob("*.distcp"))) == 2
    assert all(loss == loss and loss < 20 for _, loss in after)
