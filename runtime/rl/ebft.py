"""``rl: ebft`` (Energy-Based Fine-Tuning, structured mode) on TRL's GRPO trainer.

Axolotl's structured EBFT is GRPO whose reward compares hidden states of a frozen feature network: the policy
samples ``num_generations`` completions per prompt; prompt + completion and prompt + ground truth both go through
the feature network (the base model with the LoRA disabled, or a frozen copy of a full fine-tune's starting
weights); the states at ``feature_layers`` (fractions of depth: layer ``int(f * num_layers)``, concatenated) are
pooled per sequence (``embed_method``) and optionally whitened. Per completion j of a prompt:

    reward_j = 2 * alignment_coef * cos(gen_j, gt) - 2 * diversity_coef * mean_{j' != j} dot(gen_j, gen_j')

Generation is transformers' ``generate`` unless ``trl.use_vllm`` (a CUDA machine with vLLM, as for GRPO). Strided
mode (``runtime.rl.ebft_strided``) reuses the reward math here per block. The dataset transforms are Axolotl's
``prompt_strategies.ebft`` shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any

DEFAULT_LAYERS = (0.25, 0.5, 0.75)


# ---------------------------------------------------------------------------------------------- the reward math
def pool(hidden: Any, mask: Any, method: str, prompt_lengths: Any = None) -> Any:
    """(B, S, D) states -> (B, D) per sequence (``concat``: (B, 3D)), right padding given by ``mask``."""
    import torch

    lengths = mask.sum(dim=1).long()
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if method == "last_token":
        return hidden[rows, lengths - 1]
    if method in ("mean_pooling", "completion_mean"):
        keep = mask.bool()
        if method == "completion_mean":
            positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
            keep = keep & (positions >= prompt_lengths.unsqueeze(1))
        weights = keep.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
    if method == "concat":
        last = hidden.shape[1] - 1
        picks = [(lengths * k // 4).clamp(0, last) for k in (1, 2, 3)]
        return torch.cat([hidden[rows, p] for p in picks], dim=-1)
    raise ValueError(f"unknown embed_method {method!r}")


def whiten(gen: Any, gt: Any, tol: float = 1e-6) -> tuple[Any, Any]:
    """Both sets through ``W = V diag(1/S) V^T`` from the SVD of the generated embeddings (no direction dominates).

    Batched: ``gen``/``gt`` may be (..., N, D); each leading index gets its own ``W`` (strided mode whitens the
    ``n_samples_per_prompt`` rollouts of every block separately). Directions with a singular value under
    ``tol * max`` are dropped (a pseudo-inverse), as the samples span at most N of the D dimensions.
    """
    import torch

    _, s, vh = torch.linalg.svd(gen.float(), full_matrices=False)
    inv = torch.where(s > s.amax(dim=-1, keepdim=True) * tol, 1.0 / s.clamp(min=1e-30), torch.zeros_like(s))
    w = vh.transpose(-1, -2) @ (inv.unsqueeze(-1) * vh)
    return gen.float() @ w, gt.float() @ w


def layer_indices(fractions: Any, num_layers: int) -> list[int]:
    """``feature_layers`` fractions -> indices into ``hidden_states`` (0 is the embeddings): ``int(f * L)``."""
    return [min(num_layers, max(0, int(f * num_layers))) for f in fractions]


def feature_rewards(gen: Any, gt: Any, num_generations: int, alignment_coef: float,
                    diversity_coef: float) -> tuple[Any, Any, Any]:
    """(reward, alignment, diversity) per completion; rows of ``gen`` come in groups of ``num_generations``."""
    import torch
    import torch.nn.functional as F

    alignment = F.cosine_similarity(gen, gt, dim=-1)
    if num_generations > 1:
        groups = gen.view(-1, num_generations, gen.shape[-1])
        sims = groups @ groups.transpose(1, 2)
        sims = sims.masked_fill(torch.eye(num_generations, dtype=torch.bool, device=gen.device), 0.0)
        diversity = (sims.sum(dim=-1) / (num_generations - 1)).reshape(-1)
    else:
        diversity = torch.zeros_like(alignment)
    return 2 * alignment_coef * alignment - 2 * diversity_coef * diversity, alignment, diversity


# ---------------------------------------------------------------------------------------------- the reward function
class FeatureMatchingReward:
    """A TRL reward function (``__call__(prompts, completions, ground_truth=..., ...)``) for structured EBFT."""

    __name__ = "ebft"

    def __init__(self, cfg: Any, model: Any, tokenizer: Any, num_generations: int) -> None:
        from mudpuppy.runtime.rl.trainers import _is_peft, frozen_copy

        ebft = cfg.ebft
        self.peft = _is_peft(model)
        self.network = model if self.peft else frozen_copy(model)  # a full fine-tune: the starting weights
        self.tokenizer = tokenizer
        self.num_generations = num_generations
        self.layers_frac = list(ebft.feature_layers) if ebft and ebft.feature_layers else list(DEFAULT_LAYERS)
        self.method = (ebft.embed_method if ebft else None) or "last_token"
        self.whitening = bool(ebft and ebft.use_whitening)
        self.alignment_coef = 1.0 if ebft is None or ebft.alignment_coef is None else float(ebft.alignment_coef)
        self.diversity_coef = 1.0 if ebft is None or ebft.diversity_coef is None else float(ebft.diversity_coef)
        self.max_length = int(cfg.sequence_len)
        self.template_kwargs = dict(cfg.trl.chat_template_kwargs or {}) if cfg.trl else {}
        self.last: dict[str, float] = {}

    def layer_indices(self, num_layers: int) -> list[int]:
        return layer_indices(self.layers_frac, num_layers)

    def _render(self, prompt: Any, answer: Any) -> tuple[str, str]:
        """(prompt text, prompt + answer text); chat prompts through the tokenizer's template."""
        if isinstance(prompt, list):
            text = answer[-1]["content"] if isinstance(answer, list) else str(answer)
            head = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True,
                                                      **self.template_kwargs)
            full = self.tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": text}],
                                                      tokenize=False, **self.template_kwargs)
            return head, full
        return str(prompt), str(prompt) + str(answer)

    def embed(self, pairs: list[tuple[str, str]]) -> Any:
        import torch

        tok = self.tokenizer
        side, tok.padding_side = tok.padding_side, "right"
        try:
            batch = tok([full for _, full in pairs], return_tensors="pt", padding=True, truncation=True,
                        max_length=self.max_length, add_special_tokens=False)
        finally:
            tok.padding_side = side
        heads = [len(tok(h, add_special_tokens=False)["input_ids"]) for h, _ in pairs]
        device = next(self.network.parameters()).device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        off = self.network.disable_adapter() if self.peft else nullcontext()
        was_training = self.network.training
        self.network.eval()
        try:
            with torch.no_grad(), off:
                out = self.network(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        finally:
            self.network.train(was_training)
        states = out.hidden_states
        picked = torch.cat([states[i] for i in self.layer_indices(len(states) - 1)], dim=-1).float()
        return pool(picked, mask, self.method, torch.tensor(heads, device=device))

    def __call__(self, prompts: list[Any], completions: list[Any], ground_truth: list[Any] | None = None,
                 **_: Any) -> list[float]:
        if ground_truth is None:
            from mudpuppy.launcher.errors import UserError

            raise UserError("rl: ebft: the dataset rows have no ground_truth column",
                            hint="use type: ebft_opencode.transform or a transform returning prompt + ground_truth")
        gen = self.embed([self._render(p, c) for p, c in zip(prompts, completions, strict=True)])
        gt = self.embed([self._render(p, g) for p, g in zip(prompts, ground_truth, strict=True)])
        if self.whitening:
            gen, gt = whiten(gen, gt)
        reward, alignment, diversity = feature_rewards(gen, gt, self.num_generations, self.alignment_coef,
                                                       self.diversity_coef)
        self.last = {"alignment": float(alignment.mean()), "diversity": float(diversity.mean()),
                     "cfm_loss": float(((gen.view(-1, self.num_generations, gen.shape[-1]).mean(1)
                                         - gt.view(-1, self.num_generations, gt.shape[-1])[:, 0]) ** 2)
                                       .sum(-1).mean())}
        return [float(r) for r in reward]


# ---------------------------------------------------------------------------------------------- dataset transforms
def _opencode(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"prompt": [{"role": "user", "content": row["input"]}], "ground_truth": row["output"]}


def _last_turn(row: Mapping[str, Any]) -> dict[str, Any]:
    messages = list(row["messages"])
    last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    return {"prompt": messages[:last], "ground_truth": messages[last]["content"]}


def _first_turn(row: Mapping[str, Any]) -> dict[str, Any]:
    messages = list(row["messages"])
    first = min(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    return {"prompt": messages[:first], "ground_truth": messages[first]["content"]}


TRANSFORMS: dict[tuple[str, str], Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    ("ebft_opencode", "transform"): _opencode,
    ("ebft_chat_multiturn", "transform_last_turn"): _last_turn,
    ("ebft_chat_multiturn", "transform"): _first_turn,
}


def dataset_transform(module: str, function: str) -> Callable[[Mapping[str, Any]], dict[str, Any]] | None:
    return TRANSFORMS.get((module, function))
