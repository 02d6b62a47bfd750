"""The real training recipe (``run_training``) with FSDP2 on 2 gloo ranks (DeepSpeed: test_trainer_deepspeed.py).

Asserts what would silently go wrong: parameters are DTensor inside the Trainer (accelerate turns FSDP into DDP
on CPU unless we stop it), checkpoints hold ``.distcp`` shards, a resumed run continues with the same losses, the
2-rank losses equal a 1-process run on the same global batches, and merged shards equal the final FULL save.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.distributed.recipe import config, losses, train

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("fsdp")
    report = train(tmp, "fsdp", config(tmp / "out"))
    return tmp, report


def test_trainer_really_shards_with_fsdp2(fsdp_run: Any) -> None:
    _, report = fsdp_run
    assert report["exit"] == 0
    assert report["dtensor"] is True, report
    assert report["distributed_type"].endswith("FSDP")


def test_sharded_checkpoints_contain_distcp_and_final_model_is_full(fsdp_run: Any) -> None:
    tmp, _ = fsdp_run
    ckpt = tmp / "out" / "checkpoint-2"
    assert len(list((ckpt / "pytorch_model_fsdp_0").glob("*.distcp"))) == 2
    assert len(list((ckpt / "optimizer_0").glob("*.distcp"))) == 2
    assert (ckpt / "mudpuppy-manifest.json").is_file()
    assert (tmp / "out" / "model.safetensors").is_file()


def test_two_rank_losses_match_one_process(fsdp_run: Any) -> None:
    tmp, _ = fsdp_run
    single = tmp / "single"
    train(tmp, "single", config(single, micro_batch_size=2, fsdp_version=None, fsdp_config=None), nproc=1)
    got, want = losses(tmp / "out"), losses(single)
    assert sorted(got) == sorted(want) == [1, 2, 3, 4]
    for step in want:
        assert abs(got[step] - want[step]) < 1e-4, (step, got, want)


def test_sharded_resume_continues_identically(fsdp_run: Any) -> None:
    tmp, _ = fsdp_run
    resumed = tmp / "resumed"
    resumed.mkdir()
    shutil.copytree(tmp / "out" / "checkpoint-2", resumed / "checkpoint-2")
    train(tmp, "resume", config(resumed, resume_from_checkpoint=str(resumed / "checkpoint-2")))
    got, want = losses(resumed), losses(tmp / "out")
    assert {3, 4} <= set(got)
    for step in (3, 4):
        assert got[step] == pytest.approx(want[step], abs=1e-6), (got, want)


def test_merged_shards_equal_final_full_save(fsdp_run: Any) -> None:
    import torch
    from safetensors.torch import load_file

    from mudpuppy.runtime.parallel.merge_sharded import merge_sharded_weights

    tmp, _ = fsdp_run
    merged = merge_sharded_weights(tmp / "out" / "checkpoint-4", tmp / "merged")
    got = load_file(merged / "model.safetensors")
    want = load_file(tmp / "out" / "model.safetensors")
    assert set(got) == set(want)
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name
    assert (merged / "config.json").is_file()
