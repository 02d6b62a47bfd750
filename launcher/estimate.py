"""What a run will cost before it is submitted: parameters, training FLOPs, GPU-hours (pure arithmetic).

Why a pure module: the numbers are checked against hand-computed cases (tests/unit/launcher/test_estimate.py),
and ``launch --dry-run`` must print them without torch. The data side (rows, tokens) is measured by
``estimate_data`` and prices come from ``estimate_prices``; this module only combines them.

Parameters (``N``) come from the model's ``config.json`` shapes (decoder-only, Llama/Mistral/Qwen-style):
per layer the q/k/v/o projections (``h*a*d + 2*h*kv*d + a*d*h``, q/k/v biases when ``attention_bias``), the MLP
(``3*h*f`` gated: gate, up, down; ``2*h*f`` for the ungated families in ``UNGATED``), two norms (``2*h``); plus the
embedding (``V*h``), a final norm (``h``) and an untied output head (``V*h``). Mixture-of-experts configs are
refused: their FLOPs depend on routing. ``N_mm`` is the part that does matrix multiplies per token: every
linear weight of the layers plus the output head (the input embedding is a lookup; norms are elementwise).

Training FLOPs per real (non-pad) token, following the PaLM paper's MFU accounting (appendix B: ``6N`` per
token plus ``12 * L * H * Q * T`` for attention, no discount for the causal mask):

- forward of the matmuls ``F = 2 * N_mm``; attention forward ``A = 4 * L * (a*d) * c`` where ``c`` is the
  length of the sample the token belongs to (with sample packing and per-sample position ids attention stays
  inside the sample), so over a dataset ``sum_tokens A = 4 * L * a*d * sum_rows(len^2)``;
- full fine-tune: ``3F`` (forward, backward to activations ``F``, to weights ``F``): ``6 * N_mm``;
- LoRA/QLoRA: the frozen base runs forward and backward to activations only, ``2F = 4 * N_mm``, and the adapter
  trains fully, ``6 * N_lora``;
- ``gradient_checkpointing``: one more forward, ``+F`` (``+2 * N_lora`` with LoRA) and ``+A``;
- attention: ``3A`` (forward + backward, which is twice the forward), ``4A`` with checkpointing.

GPU-hours = FLOPs / (peak dense bf16 FLOP/s per GPU * MFU) / 3600. ``MFU`` is a stated assumption
(``DEFAULT_MFU``, overridable): no GPU measurement of mudpuppy's throughput exists in this repository yet.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mudpuppy.launcher.errors import UserError

# Conservative model-FLOPs utilisation for bf16 fine-tuning with fused attention. Published fine-tuning and
# pre-training runs on A100/H100 report 35-55%; 0.30 leaves room for small micro-batches, LoRA's many small
# matmuls and data-loading stalls. Not measured here (no GPU run of mudpuppy has been timed yet): pass --mfu.
DEFAULT_MFU = 0.30

# Peak dense (no 2:4 sparsity) BF16 tensor-core TFLOP/s per GPU, as printed in NVIDIA's datasheets (the datasheets
# print the sparse figure with a footnote; these are half of it). Table written 2026-12-02 from:
#   H100 SXM / PCIe / NVL, H200 SXM: https://www.nvidia.com/en-us/data-center/h100/ and /h200/
#   A100 (40 and 80 GB, SXM): https://www.nvidia.com/en-us/data-center/a100/
#   L40S: https://www.nvidia.com/en-us/data-center/l40s/   L4: https://www.nvidia.com/en-us/data-center/l4/
#   A10: https://www.nvidia.com/en-us/data-center/products/a10-gpu/
#   B200 (HGX B200, per GPU): https://www.nvidia.com/en-us/data-center/hgx/
# GPUs without BF16 tensor cores (T4, V100) are absent on purpose: bf16 training does not run at speed there.
PEAK_TABLE_DATE = "2026-12-02"
PEAK_BF16_TFLOPS: dict[str, float] = {
    "H100": 989.4,      # SXM5 (the H100 clouds rent); PCIe below
    "H100-SXM": 989.4,
    "H100-PCIE": 756.0,
    "H100-NVL": 835.0,
    "H200": 989.4,
    "GH200": 989.4,
    "B200": 2250.0,
    "A100": 312.0,
    "A100-80GB": 312.0,
    "A100-40GB": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
}

# Families whose MLP is up + down (no gate projection).
UNGATED = {"gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "phi", "starcoder2", "gpt_bigcode"}

LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelShape:
    """The few numbers of a ``config.json`` that decide parameters and FLOPs."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool = False
    gated: bool = True
    attention_bias: bool = False
    source: str = ""

    @classmethod
    def from_config(cls, data: dict[str, Any], source: str = "") -> ModelShape:
        text = data.get("text_config")  # multimodal wrappers keep the language model's shapes here
        cfg = {**data, **text} if isinstance(text, dict) else data
        if cfg.get("num_local_experts") or cfg.get("num_experts") or cfg.get("n_routed_experts"):
            raise UserError(f"{source}: mixture-of-experts model; its FLOPs depend on routing and are not estimated")
        try:
            hidden = int(cfg.get("hidden_size") or cfg["n_embd"])
            layers = int(cfg.get("num_hidden_layers") or cfg["n_layer"])
            heads = int(cfg.get("num_attention_heads") or cfg["n_head"])
            intermediate = int(cfg.get("intermediate_size") or cfg.get("n_inner") or 4 * hidden)
            vocab = int(cfg["vocab_size"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{source}: no hidden_size/num_hidden_layers/num_attention_heads/vocab_size; "
                            "cannot count the model's parameters") from None
        kv = int(cfg.get("num_key_value_heads") or heads)
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        model_type = str(cfg.get("model_type") or "")
        return cls(hidden=hidden, layers=layers, intermediate=intermediate, heads=heads, kv_heads=kv,
                   head_dim=head_dim, vocab=vocab, tied=bool(data.get("tie_word_embeddings", cfg.get(
                       "tie_word_embeddings", False))), gated=model_type not in UNGATED,
                   attention_bias=bool(cfg.get("attention_bias", model_type == "qwen2")), source=source)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer in one decoder layer."""
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                  "up_proj": (h, self.intermediate), "down_proj": (self.intermediate, h)}
        if self.gated:
            shapes["gate_proj"] = (h, self.intermediate)
        return shapes

    @property
    def layer_linear_params(self) -> int:
        bias = (self.heads + 2 * self.kv_heads) * self.head_dim if self.attention_bias else 0
        return sum(i * o for i, o in self.linear_shapes().values()) + bias

    @property
    def total_params(self) -> int:
        """Every parameter: embedding, layers (with their two norms), final norm, untied head."""
        embed = self.vocab * self.hidden
        layers = self.layers * (self.layer_linear_params + 2 * self.hidden)
        return embed + layers + self.hidden + (0 if self.tied else embed)

    @property
    def matmul_params(self) -> int:
        """Parameters used in a matmul per token: the layers' linear weights and the output head."""
        return self.layers * self.layer_linear_params + self.vocab * self.hidden


def lora_params(shape: ModelShape, r: int, targets: list[str] | None, target_linear: bool) -> int:
    """Trainable LoRA parameters: ``r * (in + out)`` per targeted linear layer, in every layer."""
    shapes = shape.linear_shapes()
    chosen = list(shapes) if target_linear else [n for n in shapes if any(
        t == n or t.endswith("." + n) for t in (targets or []))]
    if not chosen:
        raise UserError("lora_target_modules matches none of the model's linear layers "
                        f"({', '.join(shapes)}); cannot estimate the adapter's size")
    return shape.layers * sum(r * (shapes[n][0] + shapes[n][1]) for n in chosen)


@dataclass
class DataSize:
    """What training will read, measured by ``estimate_data`` (or given by hand in tests)."""

    rows: int                 # train rows after tokenization, filtering and the eval split
    tokens: int               # real (non-pad) tokens in those rows: one epoch
    sum_sq_len: int           # sum over rows of len(row)^2: the attention term
    batches_rows: int         # what the trainer batches: packed bins with sample_packing, else rows
    eval_rows: int = 0
    sampled: float = 1.0      # fraction of the raw rows that were tokenized (1.0: all of them)
    source: str = ""          # where the numbers come from, for the report


@dataclass
class Steps:
    per_epoch: int
    total: int
    epochs: float             # how many passes over the data ``total`` optimizer steps make


def plan_steps(cfg: Any, batches_rows: int, world_size: int) -> Steps:
    """The trainer's own arithmetic (runtime/train/args.py ``plan_training``), for the launch's world size."""
    micro = cfg.micro_batch_size or 1
    if cfg.batch_size:
        accum = max(1, cfg.batch_size // (micro * max(world_size, 1)))
    else:
        accum = cfg.gradient_accumulation_steps or 1
    batches = -(-batches_rows // (micro * world_size)) if batches_rows else 0
    per_epoch = max(1, -(-batches // accum))
    total = cfg.max_steps or max(1, math.ceil(per_epoch * cfg.num_epochs))
    return Steps(per_epoch=per_epoch, total=total, epochs=total / per_epoch)


@dataclass
class Flops:
    per_token_linear: float   # matmul FLOPs per token (model + LoRA), without attention
    attention: float          # attention FLOPs over the whole run
    total: float
    trained_tokens: float
    formula: str


def training_flops(shape: ModelShape, data: DataSize, steps: Steps, *, lora: int | None,
                   checkpointing: bool) -> Flops:
    """Total training FLOPs (see the module docstring for each term)."""
    n = shape.matmul_params
    if lora is None:
        per_token = (8 if checkpointing else 6) * n
        formula = f"{8 if checkpointing else 6}N"
    else:
        per_token = (6 if checkpointing else 4) * n + (8 if checkpointing else 6) * lora
        formula = f"{6 if checkpointing else 4}N + {8 if checkpointing else 6}N_lora"
    attention_factor = 4 if checkpointing else 3
    attention_epoch = attention_factor * 4 * shape.layers * shape.heads * shape.head_dim * data.sum_sq_len
    tokens = data.tokens * steps.epochs
    attention = attention_epoch * steps.epochs
    return Flops(per_token_linear=per_token, attention=attention, total=per_token * tokens + attention,
                 trained_tokens=tokens, formula=f"{formula} per token + {attention_factor}x4*L*H*sum(len^2)")


def parse_gpus(spec: str | None) -> tuple[str | None, int]:
    from mudpuppy.launcher.config.schema.launch import parse_gpus as parse

    return parse(spec) if spec else (None, 0)


def canonical_gpu(kind: str) -> str:
    """``h100!`` / ``H100-80GB`` / ``a100-80gb`` -> the table's spelling."""
    name = kind.rstrip("!+").upper()
    if name in PEAK_BF16_TFLOPS:
        return name
    name = name.replace("-80GB", "").replace("-94GB", "").replace("-141GB", "")
    return name


def peak_tflops(kind: str) -> float | None:
    return PEAK_BF16_TFLOPS.get(canonical_gpu(kind))


@dataclass
class Compute:
    gpu: str | None
    gpus_per_node: int
    nodes: int
    mfu: float
    peak_tflops: float | None
    gpu_hours: float | None
    wall_hours: float | None
    notes: list[str] = field(default_factory=list)


def compute_hours(total_flops: float, gpu: str | None, gpus_per_node: int, nodes: int, *, mfu: float,
                  peak: float | None = None) -> Compute:
    """GPU-hours and wall-clock hours at ``mfu`` of the GPU's peak dense bf16 rate."""
    if not 0 < mfu <= 1:
        raise UserError(f"--mfu {mfu}: give a fraction between 0 and 1 (e.g. 0.35)")
    notes: list[str] = []
    if peak is None and gpu:
        peak = peak_tflops(gpu)
        if peak is None:
            notes.append(f"no peak bf16 rate known for {gpu} (known: {', '.join(sorted(PEAK_BF16_TFLOPS))}); "
                         "pass --peak-tflops")
    if peak is None or not gpus_per_node:
        if not gpu:
            notes.append("launch.gpus is not set: no GPU-hours (set --gpus H100:8)")
        return Compute(gpu, gpus_per_node, nodes, mfu, peak, None, None, notes)
    gpu_hours = total_flops / (peak * 1e12 * mfu) / 3600
    return Compute(gpu, gpus_per_node, nodes, mfu, peak, gpu_hours, gpu_hours / (gpus_per_node * nodes), notes)


# --- the model's config.json --------------------------------------------------------------------------------
def find_model_config(base_model: str) -> Path | None:
    """A local folder's ``config.json``, else the Hugging Face cache's copy (never downloads)."""
    local = Path(base_model).expanduser()
    if local.is_dir():
        path = local / "config.json"
        return path if path.is_file() else None
    if base_model.count("/") != 1 or base_model.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return _scan_hf_cache(base_model)
    found = try_to_load_from_cache(base_model, "config.json")
    return Path(found) if isinstance(found, str) else None


def _scan_hf_cache(repo: str) -> Path | None:
    import os

    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "hub")
    folder = Path(hub) / ("models--" + repo.replace("/", "--"))
    ref = folder / "refs" / "main"
    if ref.is_file():
        path = folder / "snapshots" / ref.read_text().strip() / "config.json"
        return path if path.is_file() else None
    return None


def load_shape(base_model: str) -> ModelShape:
    path = find_model_config(base_model)
    if path is None:
        raise UserError(f"base_model {base_model}: no config.json here or in the Hugging Face cache",
                        hint="download it once (huggingface-cli download MODEL config.json) to estimate FLOPs")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable config.json ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: config.json is not a JSON object")
    return ModelShape.from_config(data, source=str(path))
