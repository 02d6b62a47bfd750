"""Issue 20 items 6, 7 and 9 on 2 gloo ranks, in one torchrun launch of the real recipe (FSDP2, full fine-tune).

* 6: with ``cpu_ram_efficient_loading`` rank 1 builds its model on the meta device (no weights in host RAM), and
  after accelerate shards it every full parameter equals the checkpoint on disk (rank 0's weights arrived);
* 7: only rank 0 tokenizes; rank 1 waits and reads the one prepared-dataset folder, and trains on the same rows;
* 9: ``fsdp_config.mixed_precision_policy`` reaches FSDP2 (weights are bf16 inside forward of an fp32 run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.distributed.conftest import torchrun
from tests.distributed.recipe import HERE, config
from tests.fixtures.tiny import build_tiny_model_with_weights

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("loading")
    build_tiny_model_with_weights(tmp / "model")
    cfg = config(tmp / "out", base_model=str(tmp / "model"), reinit_weights=None, max_steps=2, save_steps=None,
                 save_strategy="no", dataset_prepared_path=str(tmp / "prepared"),
                 fsdp_config={"fsdp_state_dict_type": "FULL_STATE_DICT", "fsdp_cpu_ram_efficient_loading": True,
                              "fsdp_transformer_layer_cls_to_wrap": "LlamaDecoderLayer",
                              "mixed_precision_policy": {"param_dtype": "bf16", "reduce_dtype": "fp32"}})
    (tmp / "run.yml").write_text(yaml.safe_dump(cfg))
    proc = torchrun(HERE / "loading_run.py", str(tmp / "run.yml"), str(tmp / "report"), timeout=240)
    reports = [json.loads((tmp / f"report.rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["exit"] == 0 for r in reports), proc.stdout[-3000:]
    return tmp, reports


def test_only_rank0_materialises_weights_and_rank1_receives_them(ranks: Any) -> None:
    _, (r0, r1) = ranks
    assert r0["param_devices_after_load"] == ["cpu"]
    assert r1["param_devices_after_load"] == ["meta"]
    for report in (r0, r1):
        assert report["dtensor"] is True
        assert report["params_compared"] > 10 and report["max_diff_vs_checkpoint"] == 0.0, report


def test_only_rank0_tokenizes_and_both_train_on_the_same_prepared_rows(ranks: Any) -> None:
    tmp, (r0, r1) = ranks
    assert r0["tokenize_calls"] >= 1 and r1["tokenize_calls"] == 0
    assert r0["train_rows"] == r1["train_rows"] > 0 and r0["train_first_ids"] == r1["train_first_ids"]
    folders = [p.name for p in (tmp / "prepared").iterdir()]
    assert len(folders) == 1 and not folders[0].startswith("."), folders  # one published cache, no leftovers


def test_fsdp_mixed_precision_policy_is_applied(ranks: Any) -> None:
    _, (r0, r1) = ranks
    assert r0["forward_weight_dtype"] == r1["forward_weight_dtype"] == "torch.bfloat16"
