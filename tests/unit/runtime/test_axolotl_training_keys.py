"""Axolotl training keys that used to load and do nothing, now taking effect on a real trainer (tiny Llama, CPU):
``embedding_lr``/``embedding_lr_scale`` (optimizer param groups), ``gradient_checkpointing: offload`` (saved
activations on CPU, same numbers), ``save_first_step`` and ``include_tokens_per_second`` (a short run)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from mudpuppy.launcher.config import load_config_text
from mudpuppy.runtime.env import Env
from mudpuppy.runtime.model import build_model
from mudpuppy.runtime.model.precision import Precision
from mudpuppy.runtime.train.args import plan_training
from tests.fixtures.tiny import EXAMPLES

pytestmark = pytest.mark.timeout(300)
CPU = Precision(mode="fp32", tf32=False, device="cpu")


def cfg(tmp_path: Path, **keys):
    doc = {"base_model": str(EXAMPLES / "tiny-llama"), "reinit_weights": True, "seed": 1, "learning_rate": 1e-3,
           "optimizer": "adamw_torch", "weight_decay": 0.1, "output_dir": str(tmp_path / "out"),
           "datasets": [{"path": str(EXAMPLES / "data" / "alpaca_tiny.jsonl"), "type": "alpaca"}], **keys}
    return load_config_text(yaml.safe_dump(doc)).config


def trainer_for(config, model=None):
    from transformers import TrainingArguments

    from mudpuppy.runtime.train.trainer import MudpuppyTrainer

    plan = plan_training(config, precision=CPU, env=Env(), train_rows=8, has_eval=False)
    model = model if model is not None else build_model(config, None, CPU)[0]
    return MudpuppyTrainer(model=model, args=TrainingArguments(**plan.args), embedding_lr=plan.embedding_lr,
                           offload_activations=plan.offload_activations)


@pytest.mark.parametrize(("keys", "expected"), [({"embedding_lr_scale": 0.25}, 0.25e-3),
                                                ({"embedding_lr": 5e-5}, 5e-5)])
def test_embeddings_and_lm_head_get_their_own_learning_rate(tmp_path, keys, expected):
    trainer = trainer_for(cfg(tmp_path, **keys))
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    by_group = [{names[id(p)] for p in g["params"]} for g in optimizer.param_groups]
    embedding_names = {n for n in names.values() if "embed_tokens" in n or "lm_head" in n}
    (emb_group,) = [g for g, names_ in zip(optimizer.param_groups, by_group, strict=True)
                    if names_ & embedding_names]
    assert {names[id(p)] for p in emb_group["params"]} == embedding_names
    assert emb_group["lr"] == pytest.approx(expected) and emb_group["weight_decay"] == 0.0
    others = [g for g in optimizer.param_groups if g is not emb_group]
    assert all(g["lr"] == pytest.approx(1e-3) for g in others)
    assert {g["weight_decay"] for g in others} == {0.1, 0.0}  # decayed weights vs norms/biases, as transformers
    assert sum(len(g["params"]) for g in optimizer.param_groups) == sum(
        1 for p in trainer.model.parameters() if p.requires_grad)


def test_offloaded_activations_give_the_same_gradients(tmp_path, monkeypatch):
    config = cfg(tmp_path, gradient_checkpointing="offload", max_steps=1)
    plain_cfg = cfg(tmp_path, gradient_checkpointing=True, max_steps=1)
    model = build_model(config, None, CPU)[0]
    twin = copy.deepcopy(model)
    entered = []
    real = torch.autograd.graph.save_on_cpu

    def spy(*args, **kwargs):
        entered.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd.graph, "save_on_cpu", spy)
    ids = torch.randint(0, 1000, (2, 16))
    batch = {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}
    offloaded = trainer_for(config, model)
    plain = trainer_for(plain_cfg, twin)
    for trainer in (offloaded, plain):
        trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which this test skips
        trainer.model.train()
    loss_a = offloaded.training_step(offloaded.model, dict(batch))
    loss_b = plain.training_step(plain.model, dict(batch))
    assert len(entered) == 1  # only the offload run went through torch's save_on_cpu
    torch.testing.assert_close(loss_a, loss_b)
    for (name, a), (_, b) in zip(offloaded.model.named_parameters(), plain.model.named_parameters(), strict=True):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, msg=name)


@pytest.mark.slow
def test_save_first_step_and_tokens_per_second_in_a_run(tmp_path):
    from mudpuppy.runtime.train.run import run_training

    config = cfg(tmp_path, max_steps=3, save_steps=3, save_first_step=True, include_tokens_per_second=True,
                 micro_batch_size=2, sequence_len=64, logging_steps=1)
    assert run_training(config, env=Env()) == 0
    out = Path(config.output_dir)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-3"]
    card = (out / "README.md").read_text()
    assert "train_tokens_per_second" in card
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["num_input_tokens_seen"] > 0
