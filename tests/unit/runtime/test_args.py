import pytest
import yaml

from mudpuppy.launcher.config import load_config_text
from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.env import Env
from mudpuppy.runtime.model.precision import Precision, resolve_precision
from mudpuppy.runtime.train.args import plan_training
from mudpuppy.runtime.train.trainer import cosine_with_constant_tail

pytestmark = pytest.mark.timeout(300)

CPU = Precision(mode="fp32", tf32=False, device="cpu")


def cfg(**keys):
    doc = {"base_model": "m", "datasets": [{"path": "d.jsonl", "type": "alpaca"}], "learning_rate": 1e-3, **keys}
    return load_config_text(yaml.safe_dump(doc)).config


def plan(rows=100, has_eval=False, env=None, precision=CPU, **keys):
    return plan_training(cfg(**keys), precision=precision, env=env or Env(), train_rows=rows, has_eval=has_eval)


def test_core_keys_map_onto_training_arguments():
    p = plan(micro_batch_size=4, gradient_accumulation_steps=2, num_epochs=2, optimizer="adamw_torch",
             weight_decay=0.1, adam_beta2=0.95, max_grad_norm=0.5, seed=3, logging_steps=5, warmup_steps=7)
    a = p.args
    assert (a["per_device_train_batch_size"], a["gradient_accumulation_steps"], a["num_train_epochs"]) == (4, 2, 2)
    assert (a["optim"], a["weight_decay"], a["adam_beta2"], a["max_grad_norm"], a["seed"]) == (
        "adamw_torch", 0.1, 0.95, 0.5, 3)
    assert (a["logging_steps"], a["warmup_steps"], a["lr_scheduler_type"]) == (5, 7, "cosine")
    assert a["use_cpu"] and not a["bf16"] and a["report_to"] == "none"
    assert p.steps_per_epoch == 13 and p.total_steps == 26  # ceil(100/4)=25 batches -> 13 steps per epoch


def test_batch_size_derives_accumulation_per_rank():
    p = plan(micro_batch_size=2, batch_size=16, env=Env(world_size=2, rank=0))
    assert p.args["gradient_accumulation_steps"] == 4


def test_per_epoch_intervals_and_default_eval():
    p = plan(rows=400, has_eval=True, micro_batch_size=1, gradient_accumulation_steps=10, val_set_size=0.1,
             evals_per_epoch=4, saves_per_epoch=2, save_total_limit=3)
    assert (p.args["eval_strategy"], p.args["eval_steps"]) == ("steps", 10)
    assert (p.args["save_strategy"], p.args["save_steps"]) == ("steps", 20)
    assert p.save_total_limit == 3 and "save_total_limit" not in p.args  # rotation is ours
    assert plan(has_eval=True, val_set_size=0.1).args["eval_strategy"] == "epoch"
    assert plan(has_eval=False).args["eval_strategy"] == "no"


def test_fractional_steps_are_fractions_of_training():
    p = plan(rows=80, max_steps=40, save_steps=0.25)
    assert p.args["save_steps"] == 10


def test_cosine_min_lr_ratio_and_constant_tail():
    p = plan(cosine_min_lr_ratio=0.1)
    assert p.args["lr_scheduler_type"] == "cosine_with_min_lr"
    assert p.args["lr_scheduler_kwargs"] == {"min_lr_rate": 0.1}
    p = plan(cosine_min_lr_ratio=0.1, cosine_constant_lr_ratio=0.5)
    assert p.constant_lr == (0.1, 0.5)
    f = cosine_with_constant_tail(warmup=2, total=20, min_ratio=0.1, constant_ratio=0.5)
    assert f(0) == 0 and f(2) == pytest.approx(1.0) and f(10) == pytest.approx(0.1) and f(19) == 0.1


def test_warmup_ratio_becomes_fractional_warmup_steps():
    assert plan(warmup_ratio=0.1).args["warmup_steps"] == 0.1


def test_trackers_and_their_environment():
    p = plan(wandb_project="proj", wandb_name="run-a", use_tensorboard=True, mlflow_tracking_uri="file:///tmp/m")
    assert p.args["report_to"] == ["wandb", "mlflow", "tensorboard"]
    assert p.args["run_name"] == "run-a"
    assert p.env_vars["WANDB_PROJECT"] == "proj" and p.env_vars["MLFLOW_TRACKING_URI"] == "file:///tmp/m"


def test_extras_neftune_group_by_length_compile_loraplus():
    p = plan(neftune_noise_alpha=5, group_by_length=True, torch_compile=True, adapter="lora", lora_r=8,
             loraplus_lr_ratio=16, optim_args={"a": 1, "b": 2})
    assert p.args["neftune_noise_alpha"] == 5
    assert p.args["train_sampling_strategy"] == "group_by_length"
    assert p.args["torch_compile"] is True
    assert p.loraplus == {"ratio": 16, "embedding": 1e-6}
    assert p.args["optim_args"] == "a=1,b=2"
    assert "torch_compile" not in plan(torch_compile="auto").args  # auto = off on CPU


@pytest.mark.parametrize("keys, words", [
    ({"optimizer": "adamw_torchh"}, "did you mean 'adamw_torch'"),
    ({"optimizer": "paged_adamw_8bit"}, "needs bitsandbytes"),
    ({"lr_scheduler": "cosin"}, "did you mean 'cosine'"),
    ({"loraplus_lr_ratio": 4}, "needs adapter: lora"),
    ({"early_stopping_patience": 2}, "need evaluation data"),
])
def test_bad_settings_are_one_line_user_errors(keys, words):
    with pytest.raises(UserError) as info:
        plan(**keys)
    assert words in info.value.one_line() and "\n" not in info.value.one_line()


def test_precision_auto_resolves_against_the_device():
    assert resolve_precision(cfg(), device="cpu").mode == "fp32"
    assert resolve_precision(cfg(bf16=True), device="cpu").mode == "bf16"
    assert resolve_precision(cfg(), device="cuda", bf16_supported=True, tf32_supported=True) == Precision(
        "bf16", True, "cuda")
    # no native bf16 (T4/V100): auto falls back to fp16 mixed precision, not fp32
    assert resolve_precision(cfg(), device="cuda", bf16_supported=False, tf32_supported=False).mode == "fp16"
    with pytest.raises(UserError, match="fp16: true needs a CUDA GPU"):
        resolve_precision(cfg(fp16=True, bf16=False), device="cpu")
    with pytest.raises(UserError, match="no bf16 support"):
        resolve_precision(cfg(bf16=True), device="cuda", bf16_supported=False, tf32_supported=False)


@pytest.mark.parametrize("keys, world, want", [
    ({"adapter": "lora", "lora_r": 4, "lora_target_linear": True}, 2, False),  # transformers alone would say True
    ({"adapter": "lora", "lora_r": 4, "gradient_checkpointing": True,
      "gradient_checkpointing_kwargs": {"use_reentrant": True}}, 2, False),  # True fails: "marked ready twice"
    ({}, 8, False),
    ({"ddp_find_unused_parameters": True}, 2, True),  # the user's word wins (MoE, unused towers)
    ({"ddp_find_unused_parameters": False}, 1, False),
    ({}, 1, None),  # no DDP: nothing to decide
])
def test_ddp_find_unused_parameters_only_when_asked(keys, world, want):
    from transformers import TrainingArguments

    p = plan(env=Env(world_size=world, rank=0), **keys)
    assert p.args.get("ddp_find_unused_parameters") == want
    assert TrainingArguments(**p.args).ddp_find_unused_parameters is want


def test_embedding_lr_scale_wins_and_offload_is_planned():
    assert plan(embedding_lr_scale=0.5, embedding_lr=1e-5).embedding_lr == ("scale", 0.5)
    assert plan(embedding_lr=1e-5).embedding_lr == ("lr", 1e-5)
    assert plan().embedding_lr is None
    assert plan(gradient_checkpointing="offload").offload_activations
    assert plan(gradient_checkpointing="offload").args["gradient_checkpointing"] is True
    assert not plan(gradient_checkpointing=True).offload_activations
    with pytest.raises(UserError, match="loraplus"):
        plan(embedding_lr=1e-5, loraplus_lr_ratio=16, adapter="lora", lora_r=4)


def test_bf16_auto_ignores_emulated_bf16(monkeypatch):
    """Issue 20.9: torch.cuda.is_bf16_supported() is True on T4/V100 (emulation); auto must ask for native bf16."""
    import torch

    asked = []

    def is_bf16_supported(including_emulation=True):
        asked.append(including_emulation)
        return including_emulation  # a T4: emulated only

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    got = resolve_precision(cfg(), device="cuda")
    assert asked == [False] and got == Precision("fp16", False, "cuda")
    with pytest.raises(UserError, match="no bf16 support"):
        resolve_precision(cfg(bf16=True), device="cuda")
