"""``optimizer: muon``: Muon for the hidden weight matrices, AdamW for every other parameter, as one optimizer.

Axolotl's Muon (its contribs ``MuonOptimizerFactory``, after Keller Jordan's MuonWithAuxAdam) gives the 2-D
weights inside the network Newton-Schulz orthogonalized momentum; embeddings, the LM head and 1-D parameters
(norms, biases) take AdamW with the config's betas, epsilon and weight decay; ``learning_rate`` drives both.
The math is torch's own ``torch.optim.Muon`` and ``torch.optim.AdamW``; this class only holds their groups in
one standard optimizer (one ``state``, ``param_groups`` flagged ``use_muon``) so that the HF Trainer's
checkpoints, torch DCP under FSDP2 and every LR scheduler treat it like any other optimizer.

Under FSDP2 a Muon parameter is a DTensor shard, and orthogonalizing a shard is not orthogonalizing the matrix:
the whole gradient (and momentum) is gathered, the update computed on the full matrix, and each rank keeps its
own shard of the result. Replicated parameters (DDP, one process) are updated in place.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch.distributed.tensor import DTensor, Replicate

from mudpuppy.runtime.train.trainer import is_embedding_parameter


def split_parameters(model: Any) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """(Muon, AdamW) named trainable parameters: Muon takes 2-D weights that are not embeddings or the LM head."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and getattr(output, "weight", None) is not None:
        embedding_ids.add(id(output.weight))
    muon, adamw = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        hidden = param.ndim == 2 and id(param) not in embedding_ids and not is_embedding_parameter(name)
        (muon if hidden else adamw).append((name, param))
    return muon, adamw


class MuonWithAdamW(torch.optim.Optimizer):
    def __init__(self, muon_params: list[Any], adamw_groups: list[dict[str, Any]], *, lr: float,
                 weight_decay: float, betas: tuple[float, float], eps: float) -> None:
        self._muon = torch.optim.Muon(muon_params, lr=lr, weight_decay=weight_decay) if muon_params else None
        self._adamw = torch.optim.AdamW(adamw_groups, lr=lr, betas=betas, eps=eps,
                                        weight_decay=weight_decay) if adamw_groups else None
        groups = []
        for inner, use_muon in ((self._muon, True), (self._adamw, False)):
            for group in inner.param_groups if inner is not None else []:
                group["use_muon"] = use_muon
                groups.append(group)
        super().__init__(groups, defaults={"lr": lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._adamw is not None:  # the groups and state are ours (load_state_dict replaces both)
            self._adamw.param_groups = [g for g in self.param_groups if not g["use_muon"]]
            self._adamw.state = self.state
            self._adamw.step()
        if self._muon is not None:
            for group in self.param_groups:
                if group["use_muon"]:
                    self._muon_group_step(group)
        return loss

    def _muon_group_step(self, group: dict[str, Any]) -> None:
        assert self._muon is not None
        local = [p for p in group["params"] if p.grad is not None and not isinstance(p, DTensor)]
        if local:
            self._muon.param_groups = [{**group, "params": local}]
            self._muon.state = self.state
            self._muon.step()
        for p in group["params"]:
            if p.grad is None or not isinstance(p, DTensor):
                continue
            # the whole matrix on every rank: Newton-Schulz, momentum and decay as one process would do them
            full = p.full_tensor()
            full.grad = p.grad.full_tensor()
            state = self.state[p]
            scratch: defaultdict[Any, dict[str, Any]] = defaultdict(dict)
            if "momentum_buffer" in state:
                scratch[full]["momentum_buffer"] = state["momentum_buffer"].full_tensor()
            self._muon.param_groups = [{**group, "params": [full]}]
            self._muon.state = scratch
            self._muon.step()
            p.copy_(_shard_like(full, p))
            state["momentum_buffer"] = _shard_like(scratch[full]["momentum_buffer"], p)
        self._muon.state = defaultdict(dict)


def _shard_like(full: torch.Tensor, like: DTensor) -> DTensor:
    """``full`` (the same on every rank) as a DTensor laid out like ``like``: each rank keeps its own slice."""
    mesh = like.device_mesh
    replicated = DTensor.from_local(full, mesh, [Replicate()] * mesh.ndim, run_check=False)
    return replicated.redistribute(mesh, like.placements)


def build_muon_optimizer(model: Any, args: Any, decay_names: set[str]) -> MuonWithAdamW:
    """Axolotl's grouping: Muon matrices (config weight decay), AdamW with and without weight decay."""
    muon, adamw = split_parameters(model)
    adamw_groups = [
        {"params": [p for n, p in adamw if n in decay_names], "weight_decay": args.weight_decay},
        {"params": [p for n, p in adamw if n not in decay_names], "weight_decay": 0.0},
    ]
    return MuonWithAdamW([p for _, p in muon], [g for g in adamw_groups if g["params"]], lr=args.learning_rate,
                         weight_decay=args.weight_decay, betas=(args.adam_beta1, args.adam_beta2),
                         eps=args.adam_epsilon)
