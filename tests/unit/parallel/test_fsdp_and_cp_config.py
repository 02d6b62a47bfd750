"""Axolotl fsdp_config -> TrainingArguments keys; CP batch slicing; merge CLI errors; fetch deepspeed_configs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mudpuppy.launcher.config import load_config
from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.env import Env
from mudpuppy.runtime.parallel import training_args_overrides
from mudpuppy.runtime.parallel.fsdp import fsdp_training_args

pytestmark = pytest.mark.timeout(300)


def cfg_of(tmp_path: Path, **keys: Any) -> Any:
    base = {"base_model": "x/y", "datasets": [{"path": "d.jsonl", "type": "alpaca"}], "learning_rate": 1e-4, **keys}
    path = tmp_path / "c.yml"
    path.write_text(json.dumps(base))
    return load_config(path).config


def test_axolotl_fsdp2_keys_map_to_transformers(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path, fsdp_version=2, fsdp_config={
        "offload_params": True, "cpu_ram_efficient_loading": True, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": "LlamaDecoderLayer", "state_dict_type": "SHARDED_STATE_DICT",
        "reshard_after_forward": "false", "activation_checkpointing": True, "sync_module_states": True})
    out = fsdp_training_args(cfg)
    assert out["fsdp"] is True
    assert out["fsdp_config"] == {
        "version": 2, "cpu_offload": True, "cpu_ram_efficient_loading": True,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
        "state_dict_type": "SHARDED_STATE_DICT", "reshard_after_forward": False, "activation_checkpointing": True}


def test_fsdp_prefixed_keys_and_fsdp1_strategy_run_on_fsdp2(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path, fsdp=["full_shard", "auto_wrap"], fsdp_config={
        "fsdp_sharding_strategy": "SHARD_GRAD_OP", "fsdp_state_dict_type": "FULL_STATE_DICT"})
    conf = fsdp_training_args(cfg)["fsdp_config"]
    assert conf["version"] == 2 and conf["reshard_after_forward"] is False
    assert conf["state_dict_type"] == "FULL_STATE_DICT"


def test_transformers_accepts_the_translation(tmp_path: Path) -> None:
    from transformers import TrainingArguments

    cfg = cfg_of(tmp_path, fsdp_version=2, fsdp_config={"transformer_layer_cls_to_wrap": "LlamaDecoderLayer",
                                                        "state_dict_type": "SHARDED_STATE_DICT"})
    args = TrainingArguments(output_dir=str(tmp_path / "o"), use_cpu=True, **training_args_overrides(cfg, Env()))
    assert args.fsdp_plugin_args["fsdp_version"] == 2
    assert args.fsdp_plugin_args["transformer_cls_names_to_wrap"] == "LlamaDecoderLayer"
    assert args.fsdp_plugin_args["state_dict_type"] == "SHARDED_STATE_DICT"


@pytest.mark.parametrize(("keys", "message"), [
    ({"fsdp_config": {"ofload_params": True}}, "did you mean 'offload_params'"),
    ({"fsdp_config": {"auto_wrap_policy": "SIZE_BASED_WRAP"}}, "min_num_params is required"),
    ({"fsdp_config": {"state_dict_type": "LOCAL_STATE_DICT"}}, "not supported"),
    ({"fsdp_config": {"sharding_strategy": "HYBRID_SHARD"}}, "no FSDP2 equivalent"),
    ({"fsdp": ["full_shard", "hybrid_shard"]}, "'hybrid_shard' is not supported"),
    ({"fsdp_config": {"activation_checkpointing": True}, "gradient_checkpointing": True}, "both on"),
])
def test_bad_fsdp_settings_are_user_errors(tmp_path: Path, keys: dict[str, Any], message: str) -> None:
    cfg = cfg_of(tmp_path, **keys)
    with pytest.raises(UserError, match=message):
        fsdp_training_args(cfg, gradient_checkpointing=bool(cfg.gradient_checkpointing))


def test_context_parallel_size_must_divide_world(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path, context_parallel_size=2)
    with pytest.raises(UserError, match="does not divide the world size 3"):
        training_args_overrides(cfg, Env(world_size=3))
    assert training_args_overrides(cfg, Env(world_size=4)) == {}


def test_cp_shard_inputs_slices_globally_shifted_labels_and_positions() -> None:
    import torch

    from mudpuppy.runtime.parallel.context_parallel import ContextParallel

    ids = torch.arange(10, 17).unsqueeze(0)  # width 7 -> padded to 8 for cp=2
    pos = torch.tensor([[0, 1, 2, 0, 1, 2, 3]])
    labels = ids.clone()
    labels[pos == 0] = -100
    parts = []
    for rank in range(2):
        cp = ContextParallel(size=2, rank=rank, group=None)
        out = cp.shard_inputs({"input_ids": ids, "position_ids": pos, "labels": labels, "num_items_in_batch":
                               torch.tensor(8.0)})
        parts.append(out)
        assert out["num_items_in_batch"].item() == 4.0  # CP peers hold the same batch
        assert "attention_mask" not in out
    assert torch.cat([p["input_ids"] for p in parts], 1)[0, :7].tolist() == ids[0].tolist()
    assert torch.cat([p["position_ids"] for p in parts], 1)[0].tolist() == [0, 1, 2, 0, 1, 2, 3, 0]
    # label for position i is token i+1; the boundary token (index 3) starts a sample so it is masked
    assert torch.cat([p["shift_labels"] for p in parts], 1)[0].tolist() == [11, 12, -100, 14, 15, 16, -100, -100]
    assert parts[1]["labels"] is parts[1]["shift_labels"]
    mask = cp.local_mask(4, "cpu")[0, 0]  # rank 1: queries 4..7 over keys 0..7
    assert mask[0].tolist() == [False, False, False, True, True, False, False, False]
    assert mask[3].tolist() == [False] * 7 + [True]  # the pad is its own segment


def test_merge_cli_reports_missing_shards_in_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mudpuppy.launcher.cli import cli

    (tmp_path / "checkpoint-2").mkdir()
    result = CliRunner().invoke(cli, ["merge-sharded-fsdp-weights", str(tmp_path / "checkpoint-2")],
                                standalone_mode=False)
    assert isinstance(result.exception, UserError)
    assert "no sharded FSDP weights" in str(result.exception)


def test_fetch_deepspeed_configs(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mudpuppy.launcher.cli import cli

    result = CliRunner().invoke(cli, ["fetch", "deepspeed_configs", "--dest", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "deepspeed_configs").glob("*.json")) == [
        "zero1.json", "zero2.json", "zero3.json", "zero3_offload.json"]


def test_mixed_precision_policy_becomes_fsdp2_policy_or_a_user_error(tmp_path: Path) -> None:
    """Issue 20.9: the key used to be dropped silently; applied on 2 ranks in test_loading_on_ranks.py."""
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy

    from mudpuppy.runtime.parallel.fsdp import mixed_precision_policy

    def policy(value: Any, **keys: Any) -> Any:
        return mixed_precision_policy(cfg_of(tmp_path, fsdp_config={"mixed_precision_policy": value}, **keys))

    assert policy("bf16") == MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16,
                                                  output_dtype=torch.bfloat16)
    assert policy({"param_dtype": "bfloat16", "reduce_dtype": "fp32", "cast_forward_inputs": False}) == \
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False)
    assert mixed_precision_policy(cfg_of(tmp_path, fsdp_config={})) is None
    for bad, words in (("int8", "is not a dtype"), ({"compute_dtype": "bf16"}, "unknown key"), (3, "must be")):
        with pytest.raises(UserError, match=words):
            policy(bad)
    with pytest.raises(UserError, match="FSDP2 only"):
        policy("bf16", fsdp_version=1)
    with pytest.raises(UserError, match="is not a dtype"):  # rejected at plan time, before tokenization
        fsdp_training_args(cfg_of(tmp_path, fsdp_config={"mixed_precision_policy": "int8"}))
