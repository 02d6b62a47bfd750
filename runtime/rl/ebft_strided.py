"""``rl: ebft`` with ``ebft.mode: strided``: EBFT's block-parallel rollouts on raw text, on our own trainer.

Per document of S tokens: anchors sit at ``A + b * stride`` for blocks ``b < NB = (S - G - A) // stride + 1``
(``A`` = ``context_length``, or past the prompt plus ``min_completion_prefix`` for prompt/completion rows; ``G`` =
``generate_max_len``). Each block samples G tokens conditioned on the true prefix before its anchor. All blocks
run in one sequence: the document, then G steps of NB generated tokens (step-major: token ``(s, b)`` sits at
``S + s * NB + b``) with position ``A + b * stride + s``; an attention mask lets the document attend causally and
each generated token attend to its block's true prefix, its own block's earlier tokens and itself. So every
block computes exactly what an ordinary forward of ``prefix + block`` computes (tests/unit/rl/test_ebft_strided.py
checks this against separate sequences).

Reward per block and rollout: the frozen feature network (LoRA disabled, or a frozen copy of a full fine-tune's
start) runs the same sequence; at ``feature_layers`` each layer's states are L2-normalised and concatenated; the
block is pooled by its last token (or ``mean_pooling``) against the true continuation's states; optionally
whitened over the ``n_samples_per_prompt`` rollouts; then ``runtime.rl.ebft.feature_rewards`` (2 * alignment_coef
* cos - 2 * diversity_coef * mean dot with the other rollouts). Advantage: RLOO (reward minus the mean of the
other rollouts of the same block), ``group_norm`` or ``reinforce``. Loss: ``rl_coef`` * REINFORCE on the
generated tokens (each scored from the position that sampled it, weighted by its own block's advantage) +
``ce_coef`` * cross-entropy on the document (its labelled tokens for prompt/completion rows).

Deliberate differences from Axolotl's trainer: it scores generated token ``k`` from the hidden state at
``k - 1`` of the step-major layout (a neighbouring block's context) and spreads advantages block-major over a
step-major layout; here each token is scored where it was sampled and carries its own block's advantage (the
policy gradient of the paper). Padding is cut off: it never hosts an anchor or a CE target. Each document of a
batch gets its own layout (its real length, its own prompt), so a long prompt in one row takes no blocks from
another (Axolotl anchors every row past the batch's longest prompt). Attention runs as sdpa (or eager) with
dense masks, never flex_attention block masks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

from mudpuppy.runtime.rl.ebft import DEFAULT_LAYERS, feature_rewards, layer_indices, pool, whiten
from mudpuppy.runtime.train.collator import REAL_TOKENS_KEY
from mudpuppy.runtime.train.trainer import MudpuppyTrainer

log = logging.getLogger("mudpuppy.runtime")


# ---------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    """The ``ebft:`` keys strided mode reads, with Axolotl's defaults."""

    stride: int = 8
    context_length: int = 8
    generate_max_len: int = 8
    n_samples: int = 4
    temperature: float = 0.6
    top_p: float = 1.0
    feature_layers: tuple[float, ...] = DEFAULT_LAYERS
    embed_method: str = "last_token"
    use_whitening: bool = False
    alignment_coef: float = 1.0
    diversity_coef: float = 1.0
    rl_coef: float = 1.0
    ce_coef: float = 0.0
    advantage_estimator: str = "rloo"
    min_completion_prefix: int = 0

    @classmethod
    def from_config(cls, cfg: Any) -> Settings:
        """Every strided ``ebft:`` key; unset ones keep Axolotl's defaults."""
        e = cfg.ebft
        keys = {"stride": "stride", "context_length": "context_length", "generate_max_len": "generate_max_len",
                "n_samples": "n_samples_per_prompt", "temperature": "temperature", "top_p": "top_p",
                "embed_method": "embed_method", "use_whitening": "use_whitening",
                "alignment_coef": "alignment_coef", "diversity_coef": "diversity_coef", "rl_coef": "rl_coef",
                "ce_coef": "ce_coef", "advantage_estimator": "advantage_estimator",
                "min_completion_prefix": "min_completion_prefix", "feature_layers": "feature_layers"}
        given = {field: getattr(e, key) for field, key in keys.items() if e is not None and getattr(e, key)
                 is not None}
        if "feature_layers" in given:
            given["feature_layers"] = tuple(given["feature_layers"]) or DEFAULT_LAYERS
        settings = replace(cls(), **given)
        if settings.n_samples == 1:  # no other rollouts: no diversity term, no group baseline (as in Axolotl)
            estimator = "reinforce" if settings.advantage_estimator == "rloo" else settings.advantage_estimator
            settings = replace(settings, diversity_coef=0.0, advantage_estimator=estimator)
        return settings


# ---------------------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class Layout:
    """Where everything sits in the strided sequence of one document of ``seq_len`` tokens."""

    seq_len: int   # S
    anchor: int    # A: the first block's first generated position
    stride: int
    gen_len: int   # G

    @property
    def num_blocks(self) -> int:
        return (self.seq_len - self.gen_len - self.anchor) // self.stride + 1

    @property
    def total(self) -> int:
        return self.seq_len + self.gen_len * self.num_blocks

    def allowed(self, steps: int, device: Any = None) -> Any:
        """(L, L) bool, True = may attend, for the document plus ``steps`` generated steps."""
        import torch

        nb, s = self.num_blocks, self.seq_len
        idx = torch.arange(s + steps * nb, device=device)
        gen = idx >= s
        off = (idx - s).clamp(min=0)
        step, block = off // nb, off % nb
        context_end = torch.where(gen, self.anchor + block * self.stride, 0)
        q, k = idx.unsqueeze(1), idx.unsqueeze(0)
        doc = ~gen.unsqueeze(1) & ~gen.unsqueeze(0) & (k <= q)
        prefix = gen.unsqueeze(1) & ~gen.unsqueeze(0) & (k < context_end.unsqueeze(1))
        own = gen.unsqueeze(1) & gen.unsqueeze(0) & (block.unsqueeze(1) == block.unsqueeze(0)) & \
            (step.unsqueeze(0) <= step.unsqueeze(1))
        return doc | prefix | own

    def positions(self, steps: int, device: Any = None) -> Any:
        """Position ids: the document's own, then ``A + b * stride + s`` for generated token ``(s, b)``."""
        import torch

        nb = self.num_blocks
        doc = torch.arange(self.seq_len, device=device)
        off = torch.arange(steps * nb, device=device)
        return torch.cat([doc, self.anchor + (off % nb) * self.stride + off // nb])

    def sources(self, steps: int | None = None, device: Any = None) -> Any:
        """For generated token ``k = s * NB + b`` (s < steps): the position whose logits sample it."""
        import torch

        nb = self.num_blocks
        off = torch.arange((self.gen_len if steps is None else steps) * nb, device=device)
        step, block = off // nb, off % nb
        return torch.where(step == 0, self.anchor + block * self.stride - 1, self.seq_len + (step - 1) * nb + block)

    def truth(self, device: Any = None) -> Any:
        """(NB, G) positions of each block's true continuation in the document."""
        import torch

        return (self.anchor + torch.arange(self.num_blocks, device=device) * self.stride).unsqueeze(1) + \
            torch.arange(self.gen_len, device=device)

    def generated(self, device: Any = None) -> Any:
        """(NB, G) positions of each block's generated tokens."""
        import torch

        nb = self.num_blocks
        return self.seq_len + torch.arange(nb, device=device).unsqueeze(1) + nb * torch.arange(self.gen_len,
                                                                                                device=device)


def attention_mask(allowed: Any, rows: int, model: Any) -> Any:
    """(rows, 1, L, L): bool for sdpa, additive float for eager attention."""
    import torch

    mask = allowed.unsqueeze(0).unsqueeze(0).expand(rows, 1, *allowed.shape)
    if _attn(model) == "eager":
        return torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, torch.finfo(torch.float32).min)
    return mask


def _attn(model: Any) -> str:
    return str(getattr(getattr(model, "config", None), "_attn_implementation", "sdpa"))


def use_dense_attention(model: Any) -> None:
    """Dense 4-D masks need sdpa or eager; anything else (flex_attention, flash) is switched to sdpa, once."""
    if _attn(model) in ("sdpa", "eager"):
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    was = _attn(model)
    base.set_attn_implementation("sdpa")
    log.info("ebft strided: attention %s -> sdpa (the strided masks are dense)", was)


# ---------------------------------------------------------------------------------------------- generation
def sample(logits: Any, temperature: float, top_p: float) -> Any:
    """(..., V) logits -> (...) token ids; temperature 0 is greedy; top-p keeps the smallest head of mass >= p."""
    import torch

    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        ordered, order = probs.sort(dim=-1, descending=True)
        drop = ordered.cumsum(dim=-1) - ordered > top_p  # the mass before this token already passes p
        probs = probs.scatter(-1, order, ordered.masked_fill(drop, 0.0))
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat / flat.sum(-1, keepdim=True), 1).view(probs.shape[:-1])


def generate(model: Any, docs: Any, layout: Layout, temperature: float, top_p: float) -> Any:
    """(R, S) documents -> (R, S + G * NB): each step samples one token for every block, all in one forward."""
    import torch

    full = docs
    nb, rows = layout.num_blocks, docs.shape[0]
    with torch.no_grad():
        for step in range(layout.gen_len):
            keep = layout.sources(step + 1, docs.device)[step * nb:]
            out = model(input_ids=full, attention_mask=attention_mask(layout.allowed(step, docs.device), rows, model),
                        position_ids=layout.positions(step, docs.device).expand(rows, -1), logits_to_keep=keep,
                        use_cache=False)
            full = torch.cat([full, sample(out.logits, temperature, top_p)], dim=1)
    return full


# ---------------------------------------------------------------------------------------------- rewards
def block_features(network: Any, full: Any, layout: Layout, fractions: Sequence[float], method: str) -> tuple[Any, Any]:
    """(gen, gt) block embeddings, each (R, NB, D): per-layer normalised states, pooled over each block."""
    import torch
    import torch.nn.functional as F

    rows = full.shape[0]
    out = network(input_ids=full, attention_mask=attention_mask(layout.allowed(layout.gen_len, full.device), rows,
                                                                network),
                  position_ids=layout.positions(layout.gen_len, full.device).expand(rows, -1),
                  output_hidden_states=True, use_cache=False, logits_to_keep=1)
    states = out.hidden_states
    feats = torch.cat([F.normalize(states[i].float(), dim=-1) for i in layer_indices(fractions, len(states) - 1)],
                      dim=-1)
    how = "mean_pooling" if method == "mean_pooling" else "last_token"  # Axolotl: anything else is last_token
    nb, g = layout.num_blocks, layout.gen_len
    ones = torch.ones(rows * nb, g, device=full.device)

    def pooled(index: Any) -> Any:
        return pool(feats[:, index.reshape(-1)].reshape(rows * nb, g, -1), ones, how).view(rows, nb, -1)

    return pooled(layout.generated(full.device)), pooled(layout.truth(full.device))


def block_rewards(gen: Any, gt: Any, settings: Settings) -> dict[str, Any]:
    """gen/gt (B, N, NB, D) -> reward, alignment, diversity (B, N, NB) and the CFM loss per block (B, NB)."""
    b, n, nb, d = gen.shape
    by_block = gen.permute(0, 2, 1, 3)  # (B, NB, N, D): one group per (document, block)
    truth = gt.permute(0, 2, 1, 3)
    if settings.use_whitening:
        by_block, truth = whiten(by_block, truth)
    reward, alignment, diversity = feature_rewards(by_block.reshape(-1, d), truth.reshape(-1, d), n,
                                                   settings.alignment_coef, settings.diversity_coef)
    cfm = ((by_block.mean(dim=2) - truth[:, :, 0]) ** 2).sum(-1)

    def back(x: Any) -> Any:
        return x.view(b, nb, n).permute(0, 2, 1)

    return {"reward": back(reward), "alignment": back(alignment), "diversity": back(diversity), "cfm": cfm}


def advantages(rewards: Any, estimator: str) -> Any:
    """(B, N, NB) rewards -> advantages over the N rollouts of each block."""
    n = rewards.shape[1]
    if estimator == "rloo" and n > 1:
        return rewards - (rewards.sum(dim=1, keepdim=True) - rewards) / (n - 1)
    if estimator == "group_norm" and n > 1:
        return (rewards - rewards.mean(dim=1, keepdim=True)) / (rewards.std(dim=1, keepdim=True) + 1e-8)
    return rewards


# ---------------------------------------------------------------------------------------------- the loss
@dataclass
class Terms:
    """Summed loss terms and their token counts, so documents of different lengths combine into token means."""

    rl_sum: Any
    rl_count: Any
    ce_sum: Any
    ce_count: Any


@dataclass
class Rollouts:
    """One document's sampled sequences (N, layout.total) and what its loss needs."""

    full: Any
    layout: Layout
    advantage: Any               # (N, NB)
    ce_mask: Any | None = None   # (N, S - 1) document targets 1..S-1 in the CE term; None: no CE term
    valid: Any | None = None     # (N, NB) blocks that count; None: all


def policy_terms(model: Any, batch: Sequence[Rollouts]) -> list[Terms]:
    """Per document: REINFORCE on its generated tokens, NLL on its ``ce_mask`` targets; one forward for all.

    Documents have their own layouts: each sits in its rows, padded to the longest sequence (a padding token sees
    only itself), with its own mask and positions; only the scored positions reach the LM head. The token of
    block b at step s is scored from ``layout.sources()``: the same logits that sampled it. One forward keeps
    DDP to one forward per backward.
    """
    import torch

    device = batch[0].full.device
    width = max(r.layout.total for r in batch)
    rows = sum(r.full.shape[0] for r in batch)
    ids = torch.zeros(rows, width, dtype=batch[0].full.dtype, device=device)
    allowed = torch.eye(width, dtype=torch.bool, device=device).repeat(rows, 1, 1)
    positions = torch.zeros(rows, width, dtype=torch.long, device=device)
    keep = torch.zeros(rows, width, dtype=torch.bool, device=device)
    spans, at = [], 0
    for r in batch:
        lay, n, t = r.layout, r.full.shape[0], r.layout.total
        ids[at:at + n, :t] = r.full
        allowed[at:at + n, :t, :t] = lay.allowed(lay.gen_len, device)
        positions[at:at + n, :t] = lay.positions(lay.gen_len, device)
        scored = lay.sources(None, device)
        if r.ce_mask is not None:
            scored = torch.cat([scored, torch.arange(lay.seq_len - 1, device=device)])
        keep[at:at + n, scored] = True
        spans.append((at, n, scored))
        at += n
    mask = allowed.unsqueeze(1)
    if _attn(model) == "eager":
        mask = torch.zeros(mask.shape, device=device).masked_fill(~mask, torch.finfo(torch.float32).min)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep, use_cache=False)
    logits = out.logits.reshape(-1, out.logits.shape[-1])  # (kept positions, V), row-major
    rank = keep.flatten().long().cumsum(0) - 1
    terms = []
    for r, (at, n, scored) in zip(batch, spans, strict=True):
        lay, nb = r.layout, r.layout.num_blocks
        flat = rank.view(rows, width)[at:at + n][:, scored]  # (n, K) rows of ``logits``
        targets = r.full[:, lay.seq_len:]
        if r.ce_mask is not None:
            targets = torch.cat([targets, r.full[:, 1:lay.seq_len]], dim=1)
        logp = torch.log_softmax(logits[flat].float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        generated = lay.gen_len * nb
        block = torch.arange(generated, device=device) % nb
        weight = (torch.ones_like(r.advantage) if r.valid is None else r.valid.float())[:, block]
        rl_sum = -(logp[:, :generated] * r.advantage[:, block].detach() * weight).sum()
        if r.ce_mask is None:
            zero = torch.zeros((), device=device)
            terms.append(Terms(rl_sum, weight.sum(), zero, zero))
        else:
            m = r.ce_mask.float()
            terms.append(Terms(rl_sum, weight.sum(), -(logp[:, generated:] * m).sum(), m.sum()))
    return terms


def combine(terms: Sequence[Terms], rl_coef: float, ce_coef: float) -> tuple[Any, Any, Any]:
    """(loss, rl, ce): token means over every document of the batch; ``rl_coef * rl + ce_coef * ce``."""
    rl = sum(t.rl_sum for t in terms) / sum(t.rl_count for t in terms).clamp(min=1)
    ce = sum(t.ce_sum for t in terms) / sum(t.ce_count for t in terms).clamp(min=1)
    return rl_coef * rl + ce_coef * ce, rl, ce


# ---------------------------------------------------------------------------------------------- one document
def anchor_of(row: dict[str, Any], settings: Settings) -> tuple[int, bool]:
    """Where the first anchor goes in one document: past its prompt + ``min_completion_prefix`` for
    prompt/completion rows (a ``prompt_length``, or labels masking a prefix), else at ``context_length``.
    Axolotl takes the longest prompt of the batch for every row; here each document has its own."""
    length = None
    if "prompt_length" in row:
        length = int(row["prompt_length"])
    elif "labels" in row:
        labelled = (row["labels"] != -100).nonzero()
        length = int(labelled[0]) if len(labelled) else int(row["labels"].shape[0])
    if not length:  # raw text: labels are the ids
        return settings.context_length, False
    return max(length + settings.min_completion_prefix, settings.context_length), True


class StridedEBFTTrainer(MudpuppyTrainer):
    """``MudpuppyTrainer`` (checkpoints, resume, schedules) whose loss is one strided EBFT step per batch."""

    def __init__(self, *args: Any, settings: Settings, feature_network: Any | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ebft = settings
        self.feature_network = feature_network  # None: the policy with its adapter disabled
        self.model_accepts_loss_kwargs = False  # our loss is a mean per micro-batch: let HF divide by accumulation
        self._ebft_logs: dict[str, list[float]] = {}
        self._short_warned = False
        use_dense_attention(self.model)
        if feature_network is not None:
            use_dense_attention(feature_network)

    def _features(self, full: Any, layout: Layout) -> tuple[Any, Any]:
        import torch

        network = self.feature_network if self.feature_network is not None else self.model
        off = network.disable_adapter() if self.feature_network is None else nullcontext()
        was = network.training
        network.eval()
        try:
            with torch.no_grad(), off:
                return block_features(network, full, layout, self.ebft.feature_layers, self.ebft.embed_method)
        finally:
            network.train(was)

    def _document(self, model: Any, row: dict[str, Any]) -> tuple[Rollouts, dict[str, Any]] | None:
        """One document (padding cut off): its rollouts, rewards and advantages; None: no block fits."""
        st = self.ebft
        real = int(row["attention_mask"].nonzero().max()) + 1 if bool(row["attention_mask"].any()) else 0
        anchor, structured = anchor_of(row, st)
        layout = Layout(seq_len=real, anchor=anchor, stride=st.stride, gen_len=st.generate_max_len)
        if real == 0 or layout.num_blocks <= 0:
            if not self._short_warned:
                log.warning("ebft strided: a document of %d tokens has no block (first anchor %d + generate_max_len "
                            "%d); it trains nothing", real, anchor, st.generate_max_len)
                self._short_warned = True
            return None
        n, nb = st.n_samples, layout.num_blocks
        docs = row["input_ids"][:real].unsqueeze(0).expand(n, -1)
        was = model.training
        model.eval()
        try:
            full = generate(model, docs, layout, st.temperature, st.top_p)
        finally:
            model.train(was)
        gen, gt = self._features(full, layout)
        parts = block_rewards(gen.view(1, n, nb, -1), gt.view(1, n, nb, -1), st)
        adv = advantages(parts["reward"], st.advantage_estimator)
        ce_mask = None
        if st.ce_coef > 0:
            target = row["labels"][1:real] != -100 if structured else row["attention_mask"][1:real].bool()
            ce_mask = target.unsqueeze(0).expand(n, -1)
        return Rollouts(full, layout, adv.reshape(n, nb), ce_mask), {**parts, "advantage": adv, "blocks": nb}

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        import torch

        inputs.pop(REAL_TOKENS_KEY, None)
        rows = [{k: v[i] for k, v in inputs.items() if isinstance(v, torch.Tensor)}
                for i in range(inputs["input_ids"].shape[0])]
        done = [d for d in (self._document(model, row) for row in rows) if d is not None]
        if not done:
            zero = sum((p * 0).sum() for p in model.parameters() if p.requires_grad)
            return (zero, None) if return_outputs else zero
        loss, rl, ce = combine(policy_terms(model, [r for r, _ in done]), self.ebft.rl_coef, self.ebft.ce_coef)

        def mean(key: str, scale: float = 1.0) -> float:
            return scale * float(torch.cat([p[key].flatten() for _, p in done]).mean())

        adv = torch.cat([p["advantage"].flatten() for _, p in done])
        self._record({"ebft/rl_loss": rl.item(), "ebft/ce_loss": ce.item(), "ebft/mean_reward": mean("reward"),
                      "ebft/alignment": mean("alignment", 2.0), "ebft/diversity": mean("diversity", 2.0),  # Axolotl's
                      "ebft/cfm_loss": mean("cfm"), "ebft/advantages_std": float(adv.std()) if adv.numel() > 1 else 0.0,
                      "ebft/num_blocks": sum(p["blocks"] for _, p in done) / len(rows)})
        return (loss, None) if return_outputs else loss

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: Any = None) -> Any:
        import torch

        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def _record(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            self._ebft_logs.setdefault(key, []).append(value)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self._ebft_logs and "loss" in logs:  # training logs carry the step's averages
            logs = {**logs, **{k: sum(v) / len(v) for k, v in self._ebft_logs.items()}}
            self._ebft_logs = {}
        super().log(logs, *args, **kwargs)


class StridedCollator:
    """Rows of equal length (the transforms pad to ``sequence_len``) -> tensors; other columns are dropped."""

    KEYS = ("input_ids", "attention_mask", "labels", "prompt_length")

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)

        def padded(values: list[int], fill: int) -> list[int]:
            return list(values) + [fill] * (width - len(values))

        batch = {"input_ids": torch.tensor([padded(r["input_ids"], 0) for r in rows]),
                 "attention_mask": torch.tensor([padded(r["attention_mask"], 0) for r in rows]),
                 "labels": torch.tensor([padded(r["labels"], -100) for r in rows])}
        if all(r.get("prompt_length") is not None for r in rows):
            batch["prompt_length"] = torch.tensor([int(r["prompt_length"]) for r in rows])
        batch[REAL_TOKENS_KEY] = int(batch["attention_mask"].sum())
        return batch


def build_trainer(cfg: Any, *, model: Any, tokenizer: Any, train_dataset: Any, eval_dataset: Any, plan: Any,
                  callbacks: list[Any]) -> StridedEBFTTrainer:
    from transformers import TrainingArguments

    from mudpuppy.launcher.errors import UserError
    from mudpuppy.runtime.rl.trainers import _is_peft, frozen_copy

    try:
        args = TrainingArguments(**{**plan.args, "remove_unused_columns": False})
    except ValueError as exc:
        raise UserError(f"trainer settings rejected by transformers: {str(exc).splitlines()[0]}") from None
    settings = Settings.from_config(cfg)
    log.info("ebft strided: stride %d, first anchor %d, %d tokens per block, %d samples, rl_coef %g, ce_coef %g",
             settings.stride, settings.context_length, settings.generate_max_len, settings.n_samples,
             settings.rl_coef, settings.ce_coef)
    return StridedEBFTTrainer(
        model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        data_collator=StridedCollator(), processing_class=tokenizer, callbacks=callbacks,
        save_total_limit=plan.save_total_limit, loraplus=plan.loraplus, constant_lr=plan.constant_lr,
        embedding_lr=plan.embedding_lr, offload_activations=plan.offload_activations, muon=plan.muon,
        settings=settings, feature_network=None if _is_peft(model) else frozen_copy(model))
