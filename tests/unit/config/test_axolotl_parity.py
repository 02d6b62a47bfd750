"""The schema against current Axolotl (``launcher/config/axolotl_main.json``, generated from its main branch) and
against the runtime: every field takes effect or is declared unsupported, every name registry equals what the
runtime resolves, every Axolotl plugin and rl mode loads or fails the way it should."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from mudpuppy.launcher.config import axolotl_keys, load_config_text, names, unsupported
from mudpuppy.launcher.config.loader import _model_in
from mudpuppy.launcher.config.schema import Config
from mudpuppy.launcher.config.schema.datasets import DatasetConfig
from mudpuppy.launcher.errors import ConfigError

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[3]
BASE = "base_model: m\nlearning_rate: 1e-4\ndatasets:\n  - path: a.jsonl\n    type: alpaca\n"


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    seen.add(model)
    for info in model.model_fields.values():
        for list_item in (False, True):
            sub = _model_in(info.annotation, list_item=list_item)
            if sub is not None and sub not in seen:
                _models(sub, seen)


# Sections the runtime reads whole (``model_dump()``), so each of their fields takes effect without a name lookup.
READ_WHOLE = {"SpecialTokens": "runtime/tokenizer.py: cfg.special_tokens.model_dump()"}


def _sources_outside_schema() -> str:
    """All package code, with the schema's own field declarations blanked (its methods still count)."""
    texts = []
    declaration = re.compile(r"^\s+\w+: .*$", re.MULTILINE)
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("tests/", "bench/", ".venv")) or "/." in rel:
            continue
        text = path.read_text(encoding="utf-8")
        texts.append(declaration.sub("", text) if rel.startswith("launcher/config/schema/") else text)
    return "\n".join(texts)


def test_every_schema_field_takes_effect_or_is_declared_unsupported() -> None:
    """No third state: a field is read outside the schema, or it is not a field and loads with its warning."""
    models: set[type[BaseModel]] = set()
    _models(Config, models)
    code = _sources_outside_schema()
    unread = sorted(
        f"{model.__name__}.{name}" for model in models for name in model.model_fields
        if model.__name__ not in READ_WHOLE and not re.search(rf"\.{name}\b|[\"']{name}[\"']", code)
    )
    assert unread == []
    declared = set(unsupported.TOP_LEVEL) | set(unsupported.DATASET)
    fields = set(Config.model_fields) | set(DatasetConfig.model_fields)
    assert declared & fields == set()
    assert set(unsupported.TOP_LEVEL) <= axolotl_keys.TOP_LEVEL
    assert set(unsupported.DATASET) <= axolotl_keys.DATASET


@pytest.mark.parametrize("key", sorted(unsupported.TOP_LEVEL))
def test_unsupported_top_level_key_loads_with_its_warning(key: str) -> None:
    loaded = load_config_text(BASE + f"{key}: 3\n" if key != "pretraining_dataset" else BASE + f"{key}: [x]\n")
    (line,) = [w for w in loaded.warnings if key in w]
    assert unsupported.TOP_LEVEL[key] in line and line.endswith("ignored")
    assert loaded.unsupported >= 1


@pytest.mark.parametrize("key", sorted(unsupported.DATASET))
def test_unsupported_dataset_key_loads_with_its_warning(key: str) -> None:
    loaded = load_config_text(BASE + f"    {key}: x\n")
    (line,) = loaded.warnings
    assert f"datasets[0].{key}" in line and unsupported.DATASET[key] in line


def test_current_axolotl_keys_are_known_and_typos_are_not() -> None:
    text = BASE + ("gptq_model_v1: null\ndebug: true\nmodel_config:\n  output_router_logits: true\neta_min: 1e-6\n"
                   "expert_parallel_size: 2\nuse_scattermoe: true\nliger_rms_norm_gated: true\nswanlab_project: p\n"
                   "trl:\n  use_liger_loss: true\n")
    loaded = load_config_text(text)
    assert len(loaded.warnings) == 8  # gptq_model_v1 is null: silently fine
    assert any("belongs to Axolotl's swanlab plugin" in w for w in loaded.warnings)
    assert any("eta_min is not read by Axolotl either" in w for w in loaded.warnings)
    # a typo in one of Axolotl's own examples: Axolotl ignores it, so it is a warning here; strict makes it an error
    (typo,) = load_config_text(BASE + "context_parapllel_size: 2\n").warnings
    assert "unknown key 'context_parapllel_size' (did you mean 'context_parallel_size'?); ignored" in typo
    with pytest.raises(ConfigError) as info:
        load_config_text(BASE + "context_parapllel_size: 2\n", strict_keys=True)
    assert "did you mean 'context_parallel_size'" in info.value.lines()[0]


def test_our_defaults_are_axolotls() -> None:
    compared = 0
    for name, info in Config.model_fields.items():
        if name in axolotl_keys.MAIN["defaults"] and info.default is not PydanticUndefined:
            assert info.default == axolotl_keys.MAIN["defaults"][name], name
            compared += 1
    assert compared > 40


@pytest.mark.parametrize("plugin", sorted(axolotl_keys.PLUGINS))
def test_every_axolotl_plugin_loads(plugin: str) -> None:
    loaded = load_config_text(BASE + f"plugins:\n  - {plugin}\n")
    package = axolotl_keys.PLUGINS[plugin]
    if package in ("cut_cross_entropy", "liger"):
        assert loaded.warnings == []
    else:
        (line,) = loaded.warnings
        assert f"{plugin} is not run by mudpuppy: " in line


def test_unknown_plugin_is_an_error() -> None:
    with pytest.raises(ConfigError, match="not an Axolotl plugin"):
        load_config_text(BASE + "plugins:\n  - axolotl.integrations.nope.NopePlugin\n")


@pytest.mark.parametrize("mode", axolotl_keys.RL_TYPES)
def test_every_axolotl_rl_mode_runs_or_is_refused_at_validate(mode: str) -> None:
    kind = {"grpo": "r.t", "gdpo": "r.t", "ebft": "r.t", "orpo": "chat_template.argilla"}.get(mode, "chatml.intel")
    text = BASE.replace("type: alpaca", f"type: {kind}")
    if mode in names.RL_MODES:
        assert load_config_text(text + f"rl: {mode}\n").config.rl == mode
    else:
        with pytest.raises(ConfigError) as info:
            load_config_text(text + f"rl: {mode}\n")
        assert any(f"{mode} (" in line and "mudpuppy does not support" in line for line in info.value.lines())


def test_gdpo_rejects_grpo_aggregation_as_axolotl_does() -> None:
    with pytest.raises(ConfigError, match="sum_then_normalize is GRPO"):
        load_config_text(BASE.replace("alpaca", "r.t") + "rl: gdpo\ntrl:\n  multi_objective_aggregation: "
                         "sum_then_normalize\n")


@pytest.mark.parametrize(("extra", "needle"), [
    ("optimizer: adamw_torhc\n", "unknown optimizer 'adamw_torhc'"),
    ("optimizer: dion\n", "Axolotl's own optimizers"),
    ("optimizer: muon\ndeepspeed: ds.json\n", "incompatible with DeepSpeed"),
    ("optimizer: muon\nfsdp_config:\n  fsdp_offload_params: false\n", "only compatible with FSDP2"),
    ("optimizer: muon\nfsdp_version: 1\nfsdp_config:\n  fsdp_offload_params: false\n", "only compatible with FSDP2"),
    ("lr_scheduler: one_cycle\n", "not implemented"),
    ("lr_scheduler: cosinus\n", "unknown lr_scheduler"),
    ("rl: dppo\n", "unknown rl mode"),
    ("chat_template: chatmlx\n", "unknown chat template"),
    ("chat_template: tokenizer_default_fallback_nope\n", "unknown chat template"),
    ("save_safetensors: false\n", "always writes safetensors"),
])
def test_names_and_axolotl_rejections_at_validate(extra: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(BASE + extra)
    assert any(needle in line for line in info.value.lines()), info.value.lines()


@pytest.mark.parametrize(("kind", "needle"), [
    ("alpacca", "unknown dataset type 'alpacca'"),
    ("alpaca:chatmll", "unknown prompt style"),
])
def test_dataset_type_checked_at_validate(kind: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config_text(BASE.replace("type: alpaca", f"type: {kind}"))


def test_axolotl_accepts_evals_without_eval_data_so_do_we() -> None:
    for extra in ("evals_per_epoch: 4\n", "evals_per_epoch: 0\n", "eval_steps: 5\n"):
        loaded = load_config_text(BASE + extra)
        assert extra.startswith("evals_per_epoch: 0") or any("nothing is evaluated" in w for w in loaded.warnings)


def test_validate_checks_names_without_torch() -> None:
    probe = ("import sys; from mudpuppy.launcher.config import load_config_text\n"
             "load_config_text('base_model: m\\nlearning_rate: 1\\noptimizer: adamw_torch\\nlr_scheduler: linear\\n"
             "chat_template: chatml\\ndatasets:\\n  - path: a\\n    type: alpaca\\n')\n"
             "print(sorted(m for m in ('torch', 'transformers', 'jinja2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_optimizer_and_scheduler_registries_are_transformers_own() -> None:
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    assert set(names.OPTIMIZERS) == {o.value for o in OptimizerNames}
    assert set(names.SCHEDULERS) == {s.value for s in SchedulerType}


def test_template_and_type_registries_are_the_runtimes() -> None:
    from mudpuppy.runtime.data import chat_templates, instruct, strategies
    from mudpuppy.runtime.data.preference import strategies as preference
    from mudpuppy.runtime.rl.trainers import TRAINERS

    assert names.chat_templates() == set(chat_templates.shipped_templates())
    runtime_sft = set(instruct.INSTRUCTION_TYPES) | set(instruct.ALIASES) | set(strategies.CHAT_TYPES)
    assert runtime_sft <= names.SFT_TYPES
    for family in ("dpo", "kto", "orpo"):
        listed = {t for t in preference.known_types(family) if " " not in t}
        assert listed <= names.PREFERENCE_TYPES[family], family
    assert set(names.RL_MODES) - {"gdpo", "ebft"} <= set(TRAINERS)  # both run on GRPOTrainer
    assert set(axolotl_keys.RL_TYPES) == set(names.RL_MODES) | set(names.UNSUPPORTED_RL)


def test_every_sft_registry_name_builds_in_the_runtime(tmp_path: Path) -> None:
    from mudpuppy.runtime.data.strategies import build_strategy
    from mudpuppy.runtime.tokenizer import load_tokenizer
    from tests.fixtures.tiny import build_tiny_model_dir

    model = build_tiny_model_dir(tmp_path / "m")
    for kind in sorted(names.SFT_TYPES):
        cfg = load_config_text(f"base_model: {model}\nlearning_rate: 1\nchat_template: chatml\n"
                               f"datasets:\n  - path: a.jsonl\n    type: {kind}\n").config
        assert build_strategy(cfg, cfg.datasets[0], load_tokenizer(cfg)) is not None, kind


def test_every_axolotl_strategy_the_runtime_builds_passes_validate(tmp_path: Path) -> None:
    """Runtime -> registry: a ``type:`` the runtime resolves (a strategy added there) must not fail validate."""
    from mudpuppy.launcher.errors import UserError
    from mudpuppy.runtime.data.preference.strategies import build_transform
    from mudpuppy.runtime.data.strategies import build_strategy
    from mudpuppy.runtime.tokenizer import load_tokenizer
    from tests.fixtures.tiny import build_tiny_model_dir

    model = build_tiny_model_dir(tmp_path / "m")
    base = f"base_model: {model}\nlearning_rate: 1\nchat_template: chatml\ndatasets:\n  - path: a.jsonl\n"
    tokenizer = load_tokenizer(load_config_text(base + "    type: alpaca\n").config)
    missing = []
    for entry in sorted(axolotl_keys.STRATEGIES):
        family, _, name = entry.rpartition(":")
        cfg = load_config_text(base + ("    type: passthrough\nrl: " + family if family else "    type: alpaca")
                               + "\n").config
        ds = cfg.datasets[0].model_copy(update={"type": name})
        try:
            if family:
                build_transform(cfg, ds, tokenizer, 0)
            else:
                build_strategy(cfg, ds, tokenizer)
        except (UserError, ImportError, ModuleNotFoundError):
            continue  # not resolved by the runtime (or needs a local module): validate may refuse it
        check = names.check_preference_type(name, family) if family else names.check_sft_type(name)
        if check is not None:
            missing.append(f"{entry}: {check}")
    assert missing == []
