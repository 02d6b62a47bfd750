"""Context parallelism and direct FSDP2 on 2 gloo ranks, checked against single-process numbers.

One torchrun launch (parallel_checks.py) produces every number; the tests below read them. The world-size-1 resume
and the merge run here, in this process, on the checkpoint that launch wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.distributed.conftest import torchrun

HERE = Path(__file__).resolve().parent
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("parallel")
    torchrun(HERE / "parallel_checks.py", env={"MP_RESULT": str(out / "r.json"), "MP_CKPT": str(out / "dcp")})
    return json.loads((out / "r.json").read_text()), out


@pytest.mark.parametrize("variant", ["attn_allgather_strideNone", "attn_allgather_stride1", "attn_ulysses_strideNone"])
def test_cp_attention_forward_and_backward_equal_single_rank(launched: Any, variant: str) -> None:
    diffs = launched[0][variant]
    assert set(diffs) == {"out", "dq", "dk", "dv"}
    assert max(diffs.values()) < 1e-5, diffs


@pytest.mark.parametrize("mode", ["allgather", "ulysses"])
def test_cp_training_step_equals_cp1(launched: Any, mode: str) -> None:
    step = launched[0][f"step_{mode}"]
    assert abs(step["loss_cp"] - step["loss_ref"]) < 1e-5, step
    assert step["grad"] < 1e-5, step


def test_fsdp2_params_are_dtensor_and_match_single_process(launched: Any) -> None:
    r = launched[0]
    assert r["fsdp_dtensor"] is True
    assert len(r["fsdp_losses"]) == 3
    for got, want in zip(r["fsdp_losses"], r["fsdp_ref_losses"], strict=False):
        assert abs(got - want) < 1e-5
    assert r["fsdp_weight_diff"] < 1e-4


def test_sharded_checkpoint_has_distcp_shards_and_resumes_identically(launched: Any) -> None:
    r, out = launched
    shards = sorted(p.name for p in (out / "dcp").glob("*.distcp"))
    assert len(shards) == 2 and (out / "dcp" / ".metadata").is_file()
    assert r["fsdp_resumed_step3"] == r["fsdp_losses"][2]


def test_fsdp_composes_with_context_parallel(launched: Any) -> None:
    r = launched[0]["fsdp_cp"]
    assert r["dtensor"] is True
    assert abs(r["loss"] - r["loss_ref"]) < 1e-5 and r["grad"] < 1e-5, r


def test_resume_sharded_checkpoint_on_world_size_one(launched: Any) -> None:
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    from tests.distributed.parallel_checks import tiny_model

    r, out = launched
    model = tiny_model(seed=99)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    msd, osd = get_state_dict(model, opt)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=str(out / "dcp"), no_dist=True)
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    batch = torch.load(out / "batch3.pt")
    loss = model(**batch).loss
    assert abs(float(loss) - r["fsdp_losses"][2]) < 1e-5


def test_merge_gives_the_same_weights(launched: Any, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from mudpuppy.runtime.parallel.merge_sharded import merge_sharded_weights

    _, out = launched
    merged = merge_sharded_weights(out / "dcp", tmp_path / "merged")
    weights = load_file(merged / "model.safetensors")
    full = torch.load(out / "full_step2.pt")
    assert set(weights) == set(full)
    for name, tensor in full.items():
        assert torch.equal(weights[name], tensor), name
    bf16 = merge_sharded_weights(out / "dcp", tmp_path / "bf16", dtype="bf16")
    assert {t.dtype for t in load_file(bf16 / "model.safetensors").values()} == {torch.bfloat16}
