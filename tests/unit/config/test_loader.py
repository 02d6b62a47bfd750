"""Config loading: names, types, conflicts, overrides, URLs — each error path as one line with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from mudpuppy.launcher.config import load_config, load_config_text, parse_override_args
from mudpuppy.launcher.errors import ConfigError, UserError
from tests.unit.config.minimal import BASE

pytestmark = pytest.mark.timeout(300)


def problems(text: str, **overrides: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "cfg.yml", overrides=dict(overrides))
    return info.value.lines()


def test_minimal_config_gets_axolotl_defaults() -> None:
    cfg = load_config_text(BASE).config
    assert cfg.learning_rate == pytest.approx(2e-4)  # YAML 1.1 reads 2e-4 as a string; the schema types it
    assert cfg.sequence_len == 512
    assert cfg.micro_batch_size == 1
    assert cfg.gradient_accumulation_steps == 1
    assert cfg.num_epochs == 1.0
    assert cfg.optimizer == "adamw_torch_fused"
    assert cfg.lr_scheduler == "cosine"
    assert cfg.output_dir == "./model-out"
    assert cfg.bf16 == "auto"
    assert cfg.train_on_inputs is False
    assert cfg.val_set_size == 0.0
    assert cfg.launch.backend == "local"
    assert cfg.datasets is not None and cfg.datasets[0].type == "alpaca"


@pytest.fixture
def strict_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUDPUPPY_STRICT_KEYS", "1")


def test_unknown_key_in_the_file_is_a_warning_and_dropped_as_axolotl_ignores_it() -> None:
    """Axolotl's schema ignores unknown keys (its own examples carry ``adam_eps``): the config still loads, the
    misspelling is named with its did-you-mean, and the value never reaches the run."""
    loaded = load_config_text(BASE + "adapter: lora\nlora_r: 8\nlora_alpah: 16\nadam_eps: 1e-6\n", "cfg.yml")
    assert loaded.config.lora_alpha is None and loaded.config.adam_epsilon is None
    typos = [w for w in loaded.warnings if "unknown key" in w]
    assert typos == [
        "cfg.yml:8: unknown key 'lora_alpah' (did you mean 'lora_alpha'?); ignored, as Axolotl ignores it "
        "(MUDPUPPY_STRICT_KEYS=1 makes unknown keys errors)",
        "cfg.yml:9: unknown key 'adam_eps' (did you mean 'adam_epsilon'?); ignored, as Axolotl ignores it "
        "(MUDPUPPY_STRICT_KEYS=1 makes unknown keys errors)",
    ]


def test_unknown_keys_in_launch_and_overrides_are_errors_without_strict() -> None:
    """``launch:`` and ``--key`` flags are mudpuppy's own: no upstream tool defines them, a misspelling is a mistake."""
    (line,) = problems(BASE + "launch:\n  backend: slurm\n  slurm:\n    partitoin: gpu\n")
    assert line == "cfg.yml:9: unknown key 'launch.slurm.partitoin' (did you mean 'partition'?)"
    (line,) = problems(BASE, lerning_rate=1)
    assert line.startswith("--lerning_rate: unknown key")


def test_unknown_top_level_key_names_line_and_suggests(strict_keys: None) -> None:
    text = BASE + "adapter: lora\nlora_r: 8\nlora_alpah: 16\n"
    assert problems(text) == ["cfg.yml:8: unknown key 'lora_alpah' (did you mean 'lora_alpha'?)"]


def test_unknown_dataset_key_names_its_index_and_line(strict_keys: None) -> None:
    text = BASE.replace("    type: alpaca\n", "    type: alpaca\n    feild_messages: conversations\n")
    assert problems(text) == [
        "cfg.yml:6: unknown key 'datasets[0].feild_messages' (did you mean 'field_messages'?)"
    ]


def test_unknown_key_far_from_everything_has_no_suggestion(strict_keys: None) -> None:
    assert problems(BASE + "zzqqxx: 1\n") == ["cfg.yml:6: unknown key 'zzqqxx'"]


def test_all_unknown_keys_are_reported_together(strict_keys: None) -> None:
    lines = problems(BASE + "lora_alpah: 1\nmicro_batchsize: 2\n")
    assert len(lines) == 2
    assert "micro_batch_size" in lines[1]


def test_known_but_unsupported_axolotl_key_warns_once_and_loads() -> None:
    loaded = load_config_text(BASE + "xformers_attention: true\nuse_comet: false\ngradio_title:\n", "cfg.yml")
    assert loaded.warnings == [
        "cfg.yml:6: xformers_attention is an Axolotl option mudpuppy does not implement yet; ignored"
    ]


def test_wrong_type_names_key_line_and_value() -> None:
    (line,) = problems(BASE + "micro_batch_size: lots\n")
    assert line.startswith("cfg.yml:6: micro_batch_size: ")
    assert "'lots'" in line


def test_wrong_type_in_nested_launch_section() -> None:
    (line,) = problems(BASE + "launch:\n  nodes: two\n")
    assert line.startswith("cfg.yml:7: launch.nodes:")


def test_missing_required_key() -> None:
    (line,) = problems("learning_rate: 1e-4\ndatasets:\n  - path: a.jsonl\n    type: alpaca\n")
    assert line == "cfg.yml: base_model: required key is missing"


@pytest.mark.parametrize(
    ("extra", "key", "needle"),
    [
        ("warmup_steps: 10\nwarmup_ratio: 0.1\n", "warmup_ratio", "mutually exclusive"),
        ("val_set_size: 0.1\ntest_datasets:\n  - path: t.jsonl\n    type: alpaca\n", "val_set_size", "test_datasets"),
        ("load_in_4bit: true\n", "load_in_4bit", "needs an adapter"),
        ("adapter: lora\nlora_r: 8\nload_in_4bit: true\n", "load_in_4bit", "set adapter: qlora"),
        ("adapter: qlora\nlora_r: 8\nload_in_8bit: true\n", "load_in_8bit", "qlora loads in 4-bit"),
        ("adapter: qlora\nlora_r: 8\n", "adapter", "qlora needs load_in_4bit"),
        ("adapter: lora\n", "adapter", "needs lora_r"),
        ("bf16: true\nfp16: true\n", "fp16", "mutually exclusive"),
        ("eval_steps: 5\nevals_per_epoch: 2\nval_set_size: 0.1\n", "evals_per_epoch", "mutually exclusive"),
        ("save_steps: 5\nsaves_per_epoch: 2\n", "saves_per_epoch", "mutually exclusive"),
        ("val_set_size: 0\neval_steps: 5\n", "eval_steps", "val_set_size"),
        ("attn_implementation: sdpa\nflash_attention: true\n", "flash_attention", "cannot be combined"),
        ("deepspeed: zero2\nfsdp_version: 2\nfsdp_config: {}\n", "deepspeed", "cannot be used together"),
        ("rl: dpo\nsample_packing: true\n", "sample_packing", "rl: dpo"),
        ("dataset_shard_idx: 1\n", "dataset_shard_idx", "dataset_shard_num"),
    ],
)
def test_conflicting_options_name_the_key_and_line(extra: str, key: str, needle: str) -> None:
    base = BASE.replace("type: alpaca", "type: chatml.intel") if "rl:" in extra else BASE
    lines = problems(base + extra)
    assert len(lines) == 1, lines
    source_lines = (base + extra).splitlines()
    line_no = 1 + next(i for i, text in enumerate(source_lines) if text.startswith(key + ":"))
    assert lines[0].startswith(f"cfg.yml:{line_no}: {key}: "), lines
    assert needle in lines[0]


def test_several_legacy_attention_flags_pick_axolotls_priority() -> None:
    loaded = load_config_text(BASE + "flash_attention: true\nflex_attention: true\n")
    assert loaded.config.attention_implementation() == "flex_attention"
    assert any("flex_attention wins" in w for w in loaded.warnings)


def test_reward_model_defaults_follow_axolotl() -> None:
    base = BASE.replace("type: alpaca", "type: chatml.intel")
    cfg = load_config_text(base + "reward_model: true\n").config
    assert (cfg.resolved_model_type(), cfg.resolved_num_labels()) == ("AutoModelForSequenceClassification", 1)
    prm = BASE.replace("type: alpaca", "type: stepwise_supervised")
    cfg = load_config_text(prm + "process_reward_model: true\n").config
    assert (cfg.resolved_model_type(), cfg.resolved_num_labels()) == ("AutoModelForTokenClassification", 2)
    cfg = load_config_text(base + "reward_model: true\nmodel_type: MyHead\nnum_labels: 3\n").config
    assert (cfg.resolved_model_type(), cfg.resolved_num_labels()) == ("MyHead", 3)
    assert load_config_text(BASE).config.resolved_model_type() == "AutoModelForCausalLM"


def test_unquoted_no_strategy_means_no() -> None:
    cfg = load_config_text(BASE + "save_strategy: no\neval_strategy: no\n").config
    assert (cfg.save_strategy, cfg.eval_strategy) == ("no", "no")


def test_no_datasets_is_an_error() -> None:
    (line,) = problems("base_model: m\nlearning_rate: 1e-4\n")
    assert "datasets" in line and "required" in line


def test_bad_gpu_spec_and_secret_value() -> None:
    (line,) = problems(BASE + "launch:\n  gpus: 'H100:x'\n")
    assert line.startswith("cfg.yml:7: launch.gpus:") and "KIND:COUNT" in line
    (line,) = problems(BASE + "launch:\n  secrets: ['hf_abc123-secret']\n")
    assert "environment variable name" in line


def test_overrides_are_typed_by_the_schema_and_named_as_flags() -> None:
    overrides = parse_override_args(
        ["--learning_rate", "1e-4", "--micro_batch_size=4", "--sample_packing", "--launch.gpus", "H100:8"]
    )
    cfg = load_config_text(BASE, overrides=overrides).config
    assert cfg.learning_rate == pytest.approx(1e-4)
    assert cfg.micro_batch_size == 4
    assert cfg.sample_packing is True
    assert cfg.launch.gpu_kind_and_count() == ("H100", 8)
    (line,) = problems(BASE, micro_batch_size="many")
    assert line.startswith("--micro_batch_size: micro_batch_size:")
    (line,) = problems(BASE, lerning_rate=1)
    assert line == "--lerning_rate: unknown key 'lerning_rate' (did you mean 'learning_rate'?)"


def test_override_parser_rejects_positional_garbage() -> None:
    with pytest.raises(UserError, match="--key value"):
        parse_override_args(["oops"])


def test_custom_type_mapping_is_a_section(strict_keys: None) -> None:
    text = BASE.replace(
        "    type: alpaca\n",
        "    type:\n      field_instruction: q\n      field_output: a\n      format: '[INST] {instruction} [/INST]'\n",
    )
    ds = load_config_text(text).config.datasets[0]  # type: ignore[index]
    assert not isinstance(ds.type, str) and ds.type is not None
    assert ds.type.field_instruction == "q"
    bad = text.replace("field_output: a", "field_outptu: a")
    (line,) = problems(bad)
    assert line == "cfg.yml:7: unknown key 'datasets[0].type.field_outptu' (did you mean 'field_output'?)"


def test_invalid_yaml_is_one_line_with_line_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("base_model: x\ndatasets: [\n  - a\n")
    with pytest.raises(UserError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:")
    assert "invalid YAML" in str(info.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yml")
    with pytest.raises(UserError, match="is a directory"):
        load_config(tmp_path)


def test_empty_and_non_mapping_documents() -> None:
    with pytest.raises(UserError, match="is empty"):
        load_config_text("", "cfg.yml")
    with pytest.raises(UserError, match="top level must be a mapping"):
        load_config_text("- a\n- b\n", "cfg.yml")


def test_strict_true_lets_overrides_change_only_keys_the_file_has() -> None:
    loaded = load_config_text(BASE + "strict: true\nseed: 1\n", "cfg.yml", overrides={"seed": 5, "weight_decay": 0.3})
    assert loaded.config.seed == 5 and loaded.config.weight_decay == 0.0
    assert any("--weight_decay: ignored because the config sets strict: true" in w for w in loaded.warnings)
    loose = load_config_text(BASE + "seed: 1\n", "cfg.yml", overrides={"weight_decay": 0.3})
    assert loose.config.weight_decay == 0.3
