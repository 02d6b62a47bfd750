"""Config -> TRL arguments, preference row errors and reward_funcs resolution: fast, no training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mudpuppy.launcher.config import load_config_text
from mudpuppy.launcher.errors import UserError
from tests.fixtures.tiny import EXAMPLES

pytestmark = pytest.mark.timeout(300)

RL_DATA = Path(__file__).resolve().parents[2] / "data" / "rl"


def config(**keys: Any) -> Any:
    base = {"base_model": str(EXAMPLES / "tiny-llama"), "output_dir": "unused", "rl": "dpo", "learning_rate": 1e-3,
            "datasets": [{"path": str(RL_DATA / "toy_pairs.jsonl"), "type": "chatml.prompt_pairs"}]}
    if keys.get("rl") in ("grpo", "gdpo"):
        base["datasets"] = [{"path": str(RL_DATA / "toy_prompts.jsonl")}]
    if keys.get("rl") == "ebft":
        base["datasets"] = [{"path": str(RL_DATA / "toy_ebft.jsonl"), "type": "ebft_opencode.transform"}]
    if keys.get("rl") == "orpo":  # ORPO reads chat-template rows (config validation checks the type per mode)
        base["datasets"] = [{"path": str(RL_DATA / "toy_pairs.jsonl"), "type": "chat_template.argilla"}]
    base.update(keys)
    return load_config_text(yaml.safe_dump({k: v for k, v in base.items() if v is not None}), name="t.yml").config


def plan(**keys: Any) -> Any:
    from mudpuppy.runtime.rl.args import plan_rl

    return plan_rl(config(**keys), {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2,
                                    "use_cpu": True, "bf16": False},
                   device="cpu")


# ---------------------------------------------------------------- config -> TRL
def test_dpo_keys_map_to_trl() -> None:
    p = plan(rl_beta=0.2, dpo_label_smoothing=0.1, dpo_use_weighting=True, sequence_len=300)
    assert p.config_class == "DPOConfig"
    assert p.kwargs["beta"] == 0.2 and p.kwargs["label_smoothing"] == 0.1 and p.kwargs["use_weighting"] is True
    assert p.kwargs["loss_type"] == ["sigmoid"] and p.kwargs["max_length"] == 300


def test_ipo_rpo_norm_and_beta_precedence() -> None:
    assert plan(rl="ipo", dpo_label_smoothing=0.1).kwargs["loss_type"] == ["ipo"]
    assert "label_smoothing" not in plan(rl="ipo", dpo_label_smoothing=0.1).kwargs
    rpo = plan(rpo_alpha=0.5)
    assert rpo.kwargs["loss_type"] == ["sigmoid", "sft"] and rpo.kwargs["loss_weights"] == [1.0, 0.5]
    assert plan(dpo_norm_loss=True).kwargs["loss_type"] == ["sigmoid_norm"]
    assert plan(rl_beta=0.2, trl={"beta": 0.3}).kwargs["beta"] == 0.3
    assert plan(rl="orpo", orpo_alpha=0.05).kwargs["beta"] == 0.05


def test_gdpo_is_trls_grpo_normalising_each_reward() -> None:
    from trl import GRPOConfig

    gdpo = plan(rl="gdpo", trl={"reward_funcs": ["r.f", "r.g"], "num_generations": 2})
    assert gdpo.config_class == "GRPOConfig" and gdpo.kwargs["multi_objective_aggregation"] == "normalize_then_sum"
    args = GRPOConfig(**{**gdpo.kwargs, "output_dir": "unused", "report_to": "none"})
    assert args.multi_objective_aggregation == "normalize_then_sum"
    grpo = plan(rl="grpo", trl={"reward_funcs": ["r.f"], "num_generations": 2})
    assert "multi_objective_aggregation" not in grpo.kwargs


def test_other_modes() -> None:
    kto = plan(rl="kto", kto_desirable_weight=2.0)
    assert kto.config_class == "KTOConfig" and kto.kwargs["desirable_weight"] == 2.0
    assert kto.kwargs["undesirable_weight"] == 1.0
    simpo = plan(rl="simpo", simpo_gamma=0.7, cpo_alpha=0.0)
    assert simpo.config_class == "CPOConfig" and simpo.kwargs["loss_type"] == "simpo"
    assert simpo.kwargs["simpo_gamma"] == 0.7 and simpo.kwargs["cpo_alpha"] == 0.0
    grpo = plan(rl="grpo", trl={"reward_funcs": ["r.f"], "num_generations": 4, "max_completion_length": 16,
                                "temperature": 0.7, "beta": 0.04})
    assert grpo.config_class == "GRPOConfig"
    assert {k: grpo.kwargs[k] for k in ("num_generations", "max_completion_length", "temperature", "beta")} == {
        "num_generations": 4, "max_completion_length": 16, "temperature": 0.7, "beta": 0.04}
    assert "max_length" not in grpo.kwargs
    assert plan(rl=None, reward_model=True).config_class == "RewardConfig"


def test_every_mode_builds_a_real_trl_config(tmp_path: Path) -> None:
    from mudpuppy.runtime.rl.trainers import _import

    cases = [dict(rl="dpo"), dict(rl="ipo"), dict(rl="kto"), dict(rl="simpo"), dict(rl="orpo"),
             dict(rl="grpo", trl={"reward_funcs": ["r.f"], "num_generations": 2}), dict(rl=None, reward_model=True)]
    for keys in cases:
        p = plan(**keys)
        _, config_cls = _import(p.mode)
        args = config_cls(output_dir=str(tmp_path), **p.kwargs)
        assert type(args).__name__ == p.config_class


@pytest.mark.parametrize(("keys", "message"), [
    (dict(rl="grpo"), "needs trl.reward_funcs"),
    (dict(rl="grpo", trl={"reward_funcs": ["r.f"], "use_vllm": True, "num_generations": 2}), "needs a CUDA GPU"),
    (dict(rl="grpo", trl={"reward_funcs": ["r.f"], "num_generations": 3}), "must divide the generation batch"),
    (dict(rl="grpo", trl={"reward_funcs": ["r.f"], "reward_weights": [1, 2], "num_generations": 2}),
     "2 weights for 1 reward_funcs"),
])
def test_bad_rl_settings_are_one_line(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        plan(**keys)
    assert "\n" not in err.value.one_line()


def test_trl_section_names_unknown_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Axolotl's trl section ignores a misspelled key: a warning with the did-you-mean; strict keys refuse it."""
    from mudpuppy.launcher.errors import ConfigError

    assert config(rl="grpo", trl={"num_generation": 4}).trl.num_generations != 4
    monkeypatch.setenv("MUDPUPPY_STRICT_KEYS", "1")
    with pytest.raises(ConfigError, match="num_generation.*did you mean 'num_generations'"):
        config(rl="grpo", trl={"num_generation": 4})


# ---------------------------------------------------------------- reward_funcs
def test_reward_funcs_resolve_from_run_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    from mudpuppy.runtime.rl.rewards import reward_functions

    monkeypatch.chdir(RL_DATA)
    (fn,) = reward_functions(["toy_rewards.vowel_reward"])
    assert fn(["eee", [{"role": "assistant", "content": "ab"}]]) == [1.0, 0.0]


@pytest.mark.parametrize(("path", "message"), [
    ("nomodule_here.fn", "cannot import 'nomodule_here'"),
    ("toy_rewards.missing", "has no attribute 'missing'"),
    ("toy_rewards", "not a module.function path"),
    ("toy_rewards.__doc__", "not a function"),
])
def test_bad_reward_funcs_are_one_line(path: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from mudpuppy.runtime.rl.rewards import reward_functions

    monkeypatch.chdir(RL_DATA)
    with pytest.raises(UserError, match=message) as err:
        reward_functions(["toy_rewards.vowel_reward", path])
    assert "trl.reward_funcs[1]" in err.value.one_line() and "\n" not in err.value.one_line()


# ---------------------------------------------------------------- bad rows
def _prepare(tmp_path: Path, rows: list[dict[str, Any]], **keys: Any) -> Any:
    from mudpuppy.runtime.data import prepare

    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    keys.setdefault("datasets", [{"path": str(path), "type": keys.pop("type", "chatml.prompt_pairs")}])
    return prepare(config(**keys))


GOOD = {"prompt": "q", "chosen": "a", "rejected": "b"}


@pytest.mark.parametrize(("row", "keys", "message"), [
    ({"prompt": "q", "chosen": "a"}, {}, "row 1: field 'rejected'"),
    ({"prompt": "q", "chosen": None, "rejected": "b"}, {}, "row 1: field 'chosen': is null"),
    ({"prompt": "q", "completion": "a", "label": "yes"}, {"rl": "kto", "type": None}, "expected true/false"),
    ({"prompt": "q", "completion": "a"}, {"rl": "kto", "type": None}, "field 'label'"),
    ({"chosen": [{"role": "user"}], "rejected": []}, {"type": "chatml.argilla_chat"}, "field 'chosen'"),
])
def test_bad_rows_name_file_and_row(tmp_path: Path, row: dict[str, Any], keys: dict[str, Any], message: str) -> None:
    first = GOOD if keys.get("rl") != "kto" else {"prompt": "q", "completion": "a", "label": True}
    with pytest.raises(UserError, match=message) as err:
        _prepare(tmp_path, [first, row], **keys)
    assert "rows.jsonl" in err.value.one_line()


def test_skip_invalid_rows_counts(tmp_path: Path) -> None:
    result = _prepare(tmp_path, [GOOD, {"prompt": "q"}, GOOD], skip_invalid_rows=True)
    assert len(result.train) == 2 and result.stats.skipped_invalid == 1


def test_unknown_type_lists_known(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a kto format.*chatml.argilla"):
        _prepare(tmp_path, [GOOD], rl="kto", type="chatml.icr")
    with pytest.raises(UserError, match="cannot import 'nosuchmod'"):
        _prepare(tmp_path, [GOOD], type="nosuchmod.transform")


def test_grpo_transform_from_local_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(RL_DATA)
    result = _prepare(tmp_path, [{"prompt": "hi", "topic": "cat"}], rl="grpo", type="toy_rewards.prompt_transform",
                      trl={"reward_funcs": ["toy_rewards.vowel_reward"]})
    assert result.train[0]["prompt"] == [{"role": "user", "content": "hi"}] and result.train[0]["topic"] == "cat"


def test_preference_cache_round_trip(tmp_path: Path) -> None:
    first = _prepare(tmp_path, [GOOD, GOOD], dataset_prepared_path=str(tmp_path / "prep"))
    second = _prepare(tmp_path, [GOOD, GOOD], dataset_prepared_path=str(tmp_path / "prep"))
    assert not first.stats.from_cache and second.stats.from_cache
    assert second.train.to_list() == first.train.to_list()


# ---------------------------------------------------------------- preprocess --dump
def test_dump_gives_trl_token_ids(tmp_path: Path) -> None:
    from mudpuppy.runtime.data.preference.tokenized import trl_rows
    from mudpuppy.runtime.tokenizer import load_tokenizer

    cfg = config(output_dir=str(tmp_path))
    tokenizer = load_tokenizer(cfg)
    result = _prepare(tmp_path, [GOOD])
    (row,) = list(trl_rows(cfg, tokenizer, result.train))
    prompt = tokenizer(result.train[0]["prompt"])["input_ids"]
    assert row["prompt_ids"] == prompt
    assert row["chosen_ids"][-1] == tokenizer.eos_token_id  # TRL appends EOS to non-conversational replies
    kto_cfg = config(rl="kto", output_dir=str(tmp_path))
    kto = _prepare(tmp_path, [{"prompt": "q", "completion": "a", "label": False}], rl="kto", type=None)
    (krow,) = list(trl_rows(kto_cfg, tokenizer, kto.train))
    assert set(krow) == {"prompt_ids", "completion_ids", "label"} and krow["label"] is False


def test_ebft_plans_grpo_without_reward_funcs_and_missing_vllm_is_one_line(tmp_path: Path) -> None:
    from mudpuppy.runtime.rl.args import plan_rl
    from mudpuppy.runtime.rl.trainers import _import

    p = plan(rl="ebft", trl={"num_generations": 2, "chat_template_kwargs": {"enable_thinking": False}})
    _, config_cls = _import(p.mode)
    args = config_cls(output_dir=str(tmp_path), **p.kwargs)
    assert type(args).__name__ == "GRPOConfig" and args.chat_template_kwargs == {"enable_thinking": False}
    import importlib.util

    if importlib.util.find_spec("vllm") is None:  # an Axolotl config with use_vllm on a GPU box without vLLM
        cfg = config(rl="ebft", trl={"num_generations": 2, "use_vllm": True})
        with pytest.raises(UserError, match="vllm is not installed") as err:
            plan_rl(cfg, {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2}, device="cuda")
        assert "\n" not in err.value.one_line()
