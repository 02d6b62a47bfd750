"""``deepspeed:`` preset/path/dict resolution: every "auto" filled from the YAML, contradictions as UserError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mudpuppy.launcher.config import load_config
from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.env import Env
from mudpuppy.runtime.parallel import training_args_overrides
from mudpuppy.runtime.parallel.deepspeed import PRESETS, resolve_deepspeed, templates_dir, zero_stage

pytestmark = pytest.mark.timeout(300)


def cfg_of(tmp_path: Path, **keys: Any) -> Any:
    base = {"base_model": "x/y", "datasets": [{"path": "d.jsonl", "type": "alpaca"}], "micro_batch_size": 2,
            "gradient_accumulation_steps": 3, "learning_rate": 1e-4, **keys}
    base = {k: v for k, v in base.items() if v is not None}
    path = tmp_path / "c.yml"
    path.write_text(json.dumps(base))
    return load_config(path).config


def _autos(node: Any, path: str = "") -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _autos(v, f"{path}.{k}" if path else k)]
    return [path] if node == "auto" else []


def test_every_preset_ships_and_parses() -> None:
    assert sorted(p.stem for p in templates_dir().glob("*.json")) == sorted(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("world", [1, 2, 8])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_presets_resolve_every_training_auto(tmp_path: Path, preset: str, world: int, precision: str) -> None:
    cfg = cfg_of(tmp_path, deepspeed=preset, max_grad_norm=0.5)
    ds = resolve_deepspeed(cfg, world_size=world, micro_batch=2, grad_accum=3, bf16=precision == "bf16",
                           fp16=precision == "fp16")
    assert ds["train_micro_batch_size_per_gpu"] == 2
    assert ds["gradient_accumulation_steps"] == 3
    assert ds["train_batch_size"] == 2 * 3 * world
    assert ds["gradient_clipping"] == 0.5
    assert ds["bf16"]["enabled"] is (precision == "bf16")
    assert ds["fp16"]["enabled"] is (precision == "fp16")
    assert zero_stage(ds) == {"zero1": 1, "zero2": 2, "zero3": 3, "zero3_offload": 3}[preset]
    left = _autos(ds)
    assert all(p.rsplit(".", 1)[-1] in ("reduce_bucket_size", "stage3_prefetch_bucket_size",
                                        "stage3_param_persistence_threshold") for p in left), left


def test_clipping_defaults_to_transformers_one_not_left_to_deepspeed(tmp_path: Path) -> None:
    ds = resolve_deepspeed(cfg_of(tmp_path, deepspeed="zero1"), world_size=1, micro_batch=1, grad_accum=1,
                           bf16=False, fp16=False)
    assert ds["gradient_clipping"] == 1.0


def test_path_and_inline_dict_with_optimizer_and_scheduler(tmp_path: Path) -> None:
    custom = {"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto",
              "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                        "weight_decay": "auto"}},
              "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto",
                                                                "warmup_num_steps": "auto", "total_num_steps": "auto"}}}
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(custom))
    for value in (str(path), custom):
        cfg = cfg_of(tmp_path, deepspeed=value, weight_decay=0.01, adam_beta2=0.95)
        ds = resolve_deepspeed(cfg, world_size=4, micro_batch=2, grad_accum=3, bf16=True, fp16=False,
                               total_steps=100, warmup_steps=10)
        assert ds["optimizer"]["params"] == {"lr": 1e-4, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.01}
        assert ds["scheduler"]["params"] == {"warmup_min_lr": 0, "warmup_max_lr": 1e-4, "warmup_num_steps": 10,
                                             "total_num_steps": 100}
        assert ds["bf16"] == {"enabled": True} and "fp16" not in ds


def test_conflicting_concrete_value_names_both_keys(tmp_path: Path) -> None:
    cfg = cfg_of(tmp_path, deepspeed={"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": 4})
    with pytest.raises(UserError, match=r"train_micro_batch_size_per_gpu=4 but micro_batch_size gives 2"):
        resolve_deepspeed(cfg, world_size=1, micro_batch=2, grad_accum=1, bf16=False, fp16=False)


@pytest.mark.parametrize(("value", "message"), [
    ("zero_3", "did you mean 'zero3'"),
    ("./missing.json", "neither a preset nor an existing file"),
    ({"zero_optimization": {"stage": 5}}, "stage must be 0, 1, 2 or 3"),
    ({"bf16": {"enabled": True}, "fp16": {"enabled": True}}, "disagrees"),
    ({"zero_optimization": {"stage": 1, "foo": "auto"}}, "cannot fill \"auto\" for zero_optimization.foo"),
])
def test_bad_inputs_are_one_line_user_errors(tmp_path: Path, value: Any, message: str) -> None:
    cfg = cfg_of(tmp_path, deepspeed=value)
    with pytest.raises(UserError, match=message):
        resolve_deepspeed(cfg, world_size=1, micro_batch=2, grad_accum=1, bf16=False, fp16=False)


def test_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"zero_optimization": {\n  "stage": 2,,\n}}')
    with pytest.raises(UserError, match=r"bad.json is not valid JSON \(line 2"):
        resolve_deepspeed(cfg_of(tmp_path, deepspeed=str(bad)), world_size=1, micro_batch=1, grad_accum=1,
                          bf16=False, fp16=False)


def test_training_args_override_gives_transformers_a_dict(tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    cfg = cfg_of(tmp_path, deepspeed="zero3", batch_size=16, gradient_accumulation_steps=None)

    class P:
        mode = "bf16"

    out = training_args_overrides(cfg, Env(world_size=4), P())
    ds = out["deepspeed"]
    assert isinstance(ds, dict) and ds["gradient_accumulation_steps"] == 2 and ds["train_batch_size"] == 16
    assert ds["bf16"]["enabled"] is True


@pytest.fixture
def shm_flag() -> Any:
    """deepspeed's per-process op table, restored after the test edits it."""
    pytest.importorskip("deepspeed")
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu.comm import ShareMemCommBuilder

    table = deepspeed.ops.__compatible_ops__
    saved = table.get(ShareMemCommBuilder.NAME)
    table[ShareMemCommBuilder.NAME] = True
    yield table, ShareMemCommBuilder.NAME
    table[ShareMemCommBuilder.NAME] = saved


@pytest.mark.parametrize("device, expect_disabled", [("cpu", True), ("cuda", False)])
def test_cpu_runs_never_jit_build_the_shm_comm_op(tmp_path: Path, shm_flag: Any, monkeypatch: pytest.MonkeyPatch,
                                                  device: str, expect_disabled: bool) -> None:
    # the g++ build of this op on the first DeepSpeed init is what looked like a hang on 2 gloo ranks
    monkeypatch.delenv("MUDPUPPY_DEEPSPEED_SHM", raising=False)
    table, name = shm_flag

    class P:
        mode = "fp32"

    P.device = device  # type: ignore[attr-defined]
    training_args_overrides(cfg_of(tmp_path, deepspeed="zero2"), Env(world_size=2), P())
    assert table[name] is (not expect_disabled)
    from deepspeed.comm.torch import build_shm_op

    if expect_disabled:
        assert build_shm_op() is None  # what TorchBackend calls: no build, gloo all-reduce


def test_shm_comm_op_can_be_kept_on_request(shm_flag: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from mudpuppy.runtime.parallel.deepspeed import skip_cpu_shm_comm

    table, name = shm_flag
    monkeypatch.setenv("MUDPUPPY_DEEPSPEED_SHM", "1")
    assert skip_cpu_shm_comm() is False and table[name] is True
    monkeypatch.delenv("MUDPUPPY_DEEPSPEED_SHM")
    assert skip_cpu_shm_comm() is True and table[name] is False


def test_offloaded_optimizer_without_optimizer_section_accepts_the_trainers_optimizer(tmp_path: Path) -> None:
    """Issue 20.4: DeepSpeed's own config parser must not force DeepSpeedCPUAdam on the Trainer's optimizer."""
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig

    def parsed(value: Any) -> Any:
        ds = resolve_deepspeed(cfg_of(tmp_path, deepspeed=value), world_size=1, micro_batch=2, grad_accum=3,
                               bf16=False, fp16=False)
        for key in ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold"):
            ds["zero_optimization"][key] = 1000  # transformers fills these from the model
        return DeepSpeedConfig(ds)

    assert parsed("zero3_offload").zero_force_ds_cpu_optimizer is False
    user = {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}
    assert parsed(user).zero_force_ds_cpu_optimizer is False
    with_section = {**user, "optimizer": {"type": "AdamW", "params": {"lr": "auto"}}}
    assert parsed(with_section).zero_force_ds_cpu_optimizer is True  # DeepSpeed's optimizer: its default stays
    assert parsed("zero3").zero_force_ds_cpu_optimizer is True  # nothing offloaded: untouched


_PROBE = """
import sys
from mudpuppy.launcher.config import load_config
from mudpuppy.runtime.parallel.deepspeed import keep_out_unless_configured
cfg = load_config(sys.argv[1]).config
keep_out_unless_configured(cfg)
import torch
from accelerate.utils import extract_model_from_parallel
from transformers.integrations import is_deepspeed_available
extract_model_from_parallel(torch.nn.Linear(1, 1))  # imports deepspeed whenever it is installed
print(sys.modules.get("deepspeed") is not None, bool(is_deepspeed_available()))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("preset, want", [(None, "False False"), ("zero2", "True True")])
def test_deepspeed_is_imported_only_when_the_config_asks(tmp_path: Path, preset: str | None, want: str) -> None:
    """accelerate imports DeepSpeed (and its warning-printing accelerator probe) on every Trainer otherwise."""
    import subprocess
    import sys

    pytest.importorskip("deepspeed")
    cfg_of(tmp_path, deepspeed=preset)
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path / "c.yml")], capture_output=True, text=True,
                          timeout=100)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[-2] == want, proc.stdout
