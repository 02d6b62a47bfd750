"""``optimizer: muon`` on a real trainer (tiny Llama, CPU): the param groups Axolotl's Muon uses, each step equal to
torch's standalone ``Muon``/``AdamW`` on copies of the same tensors, the state round-tripping through a saved
state dict, and the FSDP2 path (DTensor shards on 2 gloo ranks) equal to Muon on the whole matrices."""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from mudpuppy.launcher.config import load_config_text
from mudpuppy.runtime.env import Env
from mudpuppy.runtime.model import build_model
from mudpuppy.runtime.model.precision import Precision
from mudpuppy.runtime.train.args import plan_training
from tests.fixtures.tiny import EXAMPLES

pytestmark = pytest.mark.timeout(180)
CPU = Precision(mode="fp32", tf32=False, device="cpu")
LR, WD, BETAS, EPS = 0.02, 0.1, (0.8, 0.9), 1e-6


def _trainer(tmp_path: Path, model=None):
    from transformers import TrainingArguments

    from mudpuppy.runtime.train.trainer import MudpuppyTrainer

    doc = {"base_model": str(EXAMPLES / "tiny-llama"), "reinit_weights": True, "seed": 1, "learning_rate": LR,
           "optimizer": "muon", "weight_decay": WD, "adam_beta1": BETAS[0], "adam_beta2": BETAS[1],
           "adam_epsilon": EPS, "output_dir": str(tmp_path / "out"),
           "datasets": [{"path": str(EXAMPLES / "data" / "alpaca_tiny.jsonl"), "type": "alpaca"}]}
    config = load_config_text(yaml.safe_dump(doc)).config
    plan = plan_training(config, precision=CPU, env=Env(), train_rows=8, has_eval=False)
    assert plan.muon
    model = model if model is not None else build_model(config, None, CPU)[0]
    return MudpuppyTrainer(model=model, args=TrainingArguments(**plan.args), muon=plan.muon)


def _random_grads(model, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest(tmp_path):
    trainer = _trainer(tmp_path)
    model = trainer.model
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    # independently of the optimizer's rule: every nn.Linear inside the decoder (not the LM head)
    hidden = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"}
    muon = [g for g in optimizer.param_groups if g["use_muon"]]
    adamw = [g for g in optimizer.param_groups if not g["use_muon"]]
    assert len(muon) == 1 and {names[id(p)] for p in muon[0]["params"]} == hidden
    assert len(hidden) == 2 * 7  # q, k, v, o, gate, up, down per layer
    adam_names = {names[id(p)]: g for g in adamw for p in g["params"]}
    assert set(adam_names) == set(names.values()) - hidden
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"} <= set(adam_names)
    assert all(names[id(p)].endswith("norm.weight") for g in adamw if g["weight_decay"] == 0.0 for p in g["params"])
    assert adam_names["lm_head.weight"]["weight_decay"] == WD and adam_names["model.norm.weight"]["weight_decay"] == 0
    assert all(g["betas"] == BETAS and g["eps"] == EPS and g["lr"] == LR for g in adamw)
    assert muon[0]["lr"] == LR and muon[0]["weight_decay"] == WD


def test_each_step_equals_torch_muon_and_adamw_on_copies(tmp_path):
    trainer = _trainer(tmp_path)
    model = trainer.model
    optimizer = trainer.create_optimizer()
    groups = [(g["use_muon"], g["weight_decay"], list(g["params"])) for g in optimizer.param_groups]
    copies = {id(p): p.detach().clone().requires_grad_(True) for _, _, ps in groups for p in ps}
    muon_ref = torch.optim.Muon([copies[id(p)] for m, _, ps in groups if m for p in ps], lr=LR, weight_decay=WD)
    adam_ref = torch.optim.AdamW([{"params": [copies[id(p)] for p in ps], "weight_decay": wd}
                                  for m, wd, ps in groups if not m], lr=LR, betas=BETAS, eps=EPS)
    for step in range(2):  # the second step uses the momentum/moments of the first
        _random_grads(model, seed=step)
        for p in model.parameters():
            copies[id(p)].grad = p.grad.clone()
        before = {id(p): p.detach().clone() for p in model.parameters()}
        optimizer.step()
        muon_ref.step()
        adam_ref.step()
        for p in model.parameters():
            assert not torch.equal(p, before[id(p)])
            torch.testing.assert_close(p.detach(), copies[id(p)].detach(), rtol=0, atol=0)


def test_state_round_trips_through_a_saved_state_dict(tmp_path):
    trainer = _trainer(tmp_path)
    optimizer = trainer.create_optimizer()
    for step in range(2):
        _random_grads(trainer.model, seed=step)
        optimizer.step()
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)  # what the HF Trainer writes as optimizer.pt
    twin = _trainer(tmp_path, model=copy.deepcopy(trainer.model))
    resumed = twin.create_optimizer()
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert any("momentum_buffer" in s for s in resumed.state.values())
    for model, opt in ((trainer.model, optimizer), (twin.model, resumed)):
        _random_grads(model, seed=7)
        opt.step()
    for a, b in zip(trainer.model.parameters(), twin.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _sharded_rank(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from mudpuppy.runtime.train.muon import MuonWithAdamW

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        torch.manual_seed(0)
        full = [torch.randn(5, 3), torch.randn(6, 8)]  # 5 rows: uneven shards, as FSDP2 makes them
        params = [nn.Parameter(distribute_tensor(t.clone(), mesh, [Shard(0)])) for t in full]
        opt = MuonWithAdamW(params, [], lr=LR, weight_decay=WD, betas=BETAS, eps=EPS)
        for step in range(2):
            grads = [torch.randn(t.shape, generator=torch.Generator().manual_seed(10 * step + i))
                     for i, t in enumerate(full)]
            for p, g in zip(params, grads, strict=True):
                p.grad = distribute_tensor(g, mesh, [Shard(0)])
            opt.step()
        result = [p.full_tensor() for p in params]
        if rank == 0:
            torch.save(result, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_fsdp2_shards_are_updated_as_whole_matrices(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "result.pt")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_sharded_rank, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    torch.manual_seed(0)
    full = [nn.Parameter(torch.randn(5, 3)), nn.Parameter(torch.randn(6, 8))]
    reference = torch.optim.Muon(full, lr=LR, weight_decay=WD)
    for step in range(2):
        for i, p in enumerate(full):
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(10 * step + i))
        reference.step()
    for got, want in zip(torch.load(out, weights_only=True), full, strict=True):
        torch.testing.assert_close(got, want.detach(), rtol=1e-6, atol=1e-6)
