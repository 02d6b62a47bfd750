"""Issue 20 on a GPU: the checks only a CUDA machine can settle, one step per item, JSON + markdown out.

Every fault of issue 20 has a CPU test in CI; this script runs what those tests cannot show: the real flash
varlen kernel's numerics, bitsandbytes 4-bit weights under the LoRA kernels, CUDA GradScaler, device placement
of k-bit models, ZeRO-3 offload in one process on a GPU, tiled-MLP memory, ``bf16: auto`` on this GPU, the Triton
kernels (RMSNorm, GLU, linear CE, LoRA Q/K/V/O) against their torch references at training shapes, and a
short bf16 + flash + packing training run. Steps that need two GPUs (NCCL: one GPU per rank) say so and skip.

``--dry`` runs every step's CPU-safe part (the same code with CPU tensors, SDPA in place of the flash kernel, bf16
weights in place of 4-bit ones), so CI keeps the script itself working without a GPU.

Usage: python bench/gpu/checks.py [--dry] [--out DIR] [--only 1,4,...]   (bench/gpu/run.sh wraps it)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # tests.fixtures (``mudpuppy`` itself comes from the install or run.sh's link)
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402


class Skip(Exception):
    """A step that cannot run on this machine (the reason is reported)."""


@dataclass
class Ctx:
    dry: bool
    device: str
    gpus: int
    tmp: Path
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def half(self) -> torch.dtype:
        return torch.bfloat16


# ----------------------------------------------------------------------------------------------- helpers
def _tiny_config(hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=1024, hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=4096,
                       use_cache=False, attn_implementation="sdpa")


def _saved_model(ctx: Ctx, name: str = "base") -> Path:
    from tests.fixtures.tiny import build_tiny_model_with_weights

    path = ctx.tmp / name
    if not (path / "model.safetensors").is_file():
        build_tiny_model_with_weights(path)
    return path


def _config(doc: dict[str, Any]) -> Any:
    import yaml

    from mudpuppy.launcher.config import load_config_text

    return load_config_text(yaml.safe_dump(doc)).config


def _base_doc(ctx: Ctx, **keys: Any) -> dict[str, Any]:
    from tests.fixtures.tiny import EXAMPLES

    return {"base_model": str(_saved_model(ctx)), "learning_rate": 1e-3, "seed": 1,
            "datasets": [{"path": str(EXAMPLES / "data" / "alpaca_tiny.jsonl"), "type": "alpaca"}], **keys}


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _bnb() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------------------------- 1
def step_flash_packing(ctx: Ctx) -> dict[str, Any]:
    """Packed micro-batches of 4 bins: flattened logits equal each sample run alone; [B, W] rows leak."""
    from transformers import AutoModelForCausalLM
    from transformers.modeling_flash_attention_utils import _is_packed_sequence
    from transformers.utils import is_flash_attn_2_available

    from mudpuppy.runtime.train.collator import REAL_TOKENS_KEY, Collator
    from tests.fixtures.flash_cpu import flash_attention_on_cpu

    torch.manual_seed(0)
    dtype = ctx.half if ctx.device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_config(_tiny_config(hidden=128 if ctx.device == "cuda" else 64)).to(
        ctx.device, dtype).eval()
    g = torch.Generator().manual_seed(1)
    lengths = [37, 90, 15, 120, 64, 8, 77, 50] if ctx.device == "cuda" else [9, 14, 5, 11, 7, 3, 12, 6]
    samples = [torch.randint(3, 1000, (n,), generator=g).tolist() for n in lengths]
    rows = []
    for i in range(0, len(samples), 2):
        a, b = samples[i], samples[i + 1]
        rows.append({"input_ids": a + b, "labels": a + b,
                     "position_ids": list(range(len(a))) + list(range(len(b)))})
    detected = {}
    for bs in (1, 2, 3, 4):
        batch = Collator(pad_token_id=0, flatten=True)(rows[:bs])
        detected[bs] = bool(_is_packed_sequence(batch["position_ids"], batch["input_ids"].shape[0]))
    if not all(detected.values()):
        raise AssertionError(f"flattened batches not seen as packed: {detected}")

    def to_dev(batch: dict[str, Any]) -> dict[str, Any]:
        batch.pop(REAL_TOKENS_KEY)
        return {k: v.to(ctx.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    with torch.no_grad():
        reference = torch.cat([model(input_ids=torch.tensor([s], device=ctx.device)).logits[0] for s in samples])
        flat = to_dev(Collator(pad_token_id=0, flatten=True)(rows))
        wide = to_dev(Collator(pad_token_id=0)(rows))
        if ctx.device == "cuda" and is_flash_attn_2_available():
            kernel = "flash-attn 2 (flash_attention_2)"
            model.config._attn_implementation = "flash_attention_2"
            got = model(**flat).logits[0, : reference.shape[0]]
            leaked = model(**wide).logits
            model.config._attn_implementation = "sdpa"
        else:
            if ctx.device == "cuda":
                kernel = "torch.nn.attention.varlen.varlen_attn under transformers' flash path"
                fns = _torch_varlen_kernels()
            else:
                kernel = "SDPA emulation under transformers' flash path (CPU)"
                fns = {}
            with flash_attention_on_cpu(model, **fns):
                got = model(**flat).logits[0, : reference.shape[0]]
                leaked = model(**wide).logits
    scale = float(reference.abs().max())
    err = float((got.float() - reference.float()).abs().max()) / scale
    second = leaked[0, len(samples[0]): len(samples[0]) + len(samples[1])]
    leak = float((second.float() - reference[len(samples[0]): len(samples[0]) + len(samples[1])].float())
                 .abs().max()) / scale
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    ok = err < tol and leak > 5 * max(err, tol / 10)
    return {"ok": ok, "kernel": kernel, "packed_detected": detected, "flat_rel_err": err, "unflattened_rel_err": leak,
            "tolerance": tol}


def _torch_varlen_kernels() -> dict[str, Any]:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError as exc:
        raise Skip("neither flash-attn nor torch.nn.attention.varlen is available") from exc

    def varlen_fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                  cu_seqlens_k: torch.Tensor, max_seqlen_q: int | None = None, max_seqlen_k: int | None = None,
                  dropout_p: float = 0.0, softmax_scale: float | None = None, causal: bool = False) -> torch.Tensor:
        return varlen_attn(q, k, v, cu_seqlens_q.int(), cu_seqlens_k.int(), int(max_seqlen_q or 0),
                           int(max_seqlen_k or 0), scale=softmax_scale, window_size=(-1, 0) if causal else (-1, -1),
                           enable_gqa=q.shape[1] != k.shape[1])

    from tests.fixtures.flash_cpu import dense

    return {"varlen_fn": varlen_fn, "dense_fn": dense}


# ----------------------------------------------------------------------------------------------- 2
def step_lora_kernels_kbit(ctx: Ctx) -> dict[str, Any]:
    """LoRA kernels vs peft under bf16 autocast with fp32 activations meeting 4-bit (GPU) / bf16 (dry) weights."""
    from peft import LoraConfig, get_peft_model

    from mudpuppy.kernels.apply import apply_kernels
    from mudpuppy.launcher.errors import UserError

    kernels = {"adapter": "qlora", "lora_mlp_kernel": True, "lora_qkv_kernel": True, "lora_o_kernel": True}

    def build() -> Any:
        from transformers import AutoModelForCausalLM

        torch.manual_seed(0)
        if ctx.device == "cuda" and _bnb():
            from peft import prepare_model_for_kbit_training
            from transformers import BitsAndBytesConfig

            bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=ctx.half,
                                     bnb_4bit_quant_storage=ctx.half)
            base = AutoModelForCausalLM.from_pretrained(_saved_model(ctx), quantization_config=bnb,
                                                        device_map={"": 0}, dtype=ctx.half)
            base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
        else:
            base = AutoModelForCausalLM.from_pretrained(_saved_model(ctx)).to(ctx.device)
            for name, module in base.named_modules():  # the k-bit layout: half linears, fp32 everything else
                if isinstance(module, torch.nn.Linear) and "lm_head" not in name:
                    module.to(ctx.half)
        torch.manual_seed(1)
        lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, init_lora_weights=False, task_type="CAUSAL_LM",
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                          "down_proj"])
        return get_peft_model(base, lora)

    ref, fused = build(), build()
    weights = "bitsandbytes nf4" if ctx.device == "cuda" and _bnb() else "bf16 (4-bit needs CUDA + bitsandbytes)"
    apply_kernels(fused, kernels)
    ids = torch.randint(3, 1000, (2, 64), generator=torch.Generator().manual_seed(0)).to(ctx.device)
    out = []
    for model in (ref, fused):
        with torch.autocast(ctx.device, dtype=ctx.half):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = {n: p.grad.float().flatten() for n, p in model.named_parameters() if p.requires_grad}
        out.append((float(loss), grads))
    (loss_r, grads_r), (loss_f, grads_f) = out
    worst_cos = min(float(torch.nn.functional.cosine_similarity(g, grads_r[n], dim=0)) for n, g in grads_f.items())
    try:
        apply_kernels(torch.nn.Linear(2, 2), {**kernels, "adapter": "lora", "load_in_8bit": True})
        refused = None
    except UserError as exc:
        refused = exc.one_line()
    ok = abs(loss_f - loss_r) < 0.02 * max(1.0, abs(loss_r)) and worst_cos > 0.99 and refused is not None
    return {"ok": ok, "weights": weights, "loss_peft": loss_r, "loss_kernels": loss_f, "worst_grad_cosine": worst_cos,
            "8bit_refused": refused}


# ----------------------------------------------------------------------------------------------- 3
def step_kbit_device_map(ctx: Ctx) -> dict[str, Any]:
    """Each rank's k-bit model lands whole on its own GPU (rank 1 needs a second GPU)."""
    from mudpuppy.runtime.env import read_env
    from mudpuppy.runtime.model import loader
    from mudpuppy.runtime.model.precision import Precision

    cfg = _config(_base_doc(ctx, adapter="qlora", lora_r=4, load_in_4bit=True))
    cuda = Precision(mode="bf16", tf32=True, device="cuda")
    if ctx.device != "cuda" or not _bnb():
        original = loader.quantization_config
        loader.quantization_config = lambda c, p: "bnb"  # type: ignore[assignment]
        try:
            maps = {r: loader.model_kwargs(cfg, cuda, local_rank=r)["device_map"] for r in (0, 1)}
        finally:
            loader.quantization_config = original  # type: ignore[assignment]
        return {"ok": maps == {0: {"": 0}, 1: {"": 1}}, "device_maps": {str(k): v for k, v in maps.items()},
                "note": "arguments only; placement needs CUDA + bitsandbytes"}
    placed = {}
    for rank in range(min(ctx.gpus, 2)):
        env = read_env({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"})
        torch.cuda.reset_peak_memory_stats(rank)
        model = loader.load_model(cfg, None, cuda, training=False, env=env)
        devices = sorted({str(p.device) for p in model.parameters()})
        placed[rank] = {"devices": devices, "current_device": torch.cuda.current_device(),
                        "peak_mib_on_gpu0": torch.cuda.max_memory_allocated(0) / 2**20}
        del model
        torch.cuda.empty_cache()
    ok = all(v["devices"] == [f"cuda:{r}"] and v["current_device"] == r for r, v in placed.items())
    return {"ok": ok, "placed": {str(k): v for k, v in placed.items()},
            "note": "" if ctx.gpus > 1 else "one GPU: rank 1's placement is checked on CPU (test_kbit_placement.py)"}


# ----------------------------------------------------------------------------------------------- 4
def step_deepspeed_zero3_offload(ctx: Ctx) -> dict[str, Any]:
    """zero3_offload in one process started without torchrun: trains 2 steps with the Trainer's optimizer."""
    try:
        import deepspeed  # noqa: F401
    except ImportError as exc:
        raise Skip("deepspeed is not installed") from exc
    from deepspeed.runtime.config import DeepSpeedConfig

    from mudpuppy.runtime.parallel.deepspeed import resolve_deepspeed

    cfg = _config(_base_doc(ctx, deepspeed="zero3_offload"))
    ds = resolve_deepspeed(cfg, world_size=1, micro_batch=1, grad_accum=1, bf16=True, fp16=False)
    for key in ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold"):
        ds["zero_optimization"][key] = 1000
    parsed = DeepSpeedConfig(ds).zero_force_ds_cpu_optimizer is False
    if ctx.dry:
        return {"ok": parsed, "zero_force_ds_cpu_optimizer_off": parsed,
                "note": "dry: config only (the CPU training run is tests/distributed/test_deepspeed_world1.py)"}
    report = _recipe_run(ctx, "zero3", deepspeed="zero3_offload", bf16=True, optimizer="adamw_torch_fused")
    return {"ok": parsed and report["exit"] == 0 and len(report["losses"]) == 2, **report}


def _recipe_run(ctx: Ctx, name: str, nproc: int = 1, **keys: Any) -> dict[str, Any]:
    """``run_training`` in a fresh process (no torchrun variables unless nproc > 1); exit, wrapper, losses."""
    import yaml

    out = ctx.tmp / name
    doc = _base_doc(ctx, sequence_len=128, micro_batch_size=2, gradient_accumulation_steps=1, max_steps=2,
                    logging_steps=1, save_strategy="no", output_dir=str(out), **keys)
    (ctx.tmp / f"{name}.yml").write_text(yaml.safe_dump(doc))
    script = REPO / "tests" / "distributed" / "train_run.py"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                              "MASTER_PORT")}
    paths = [p for p in (os.environ.get("PYTHONPATH"), str(REPO)) if p]
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(paths))
    cmd = [sys.executable, str(script), str(ctx.tmp / f"{name}.yml"), str(ctx.tmp / f"{name}.json")]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), *cmd[1:]]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=REPO)
    report: dict[str, Any] = {"exit": proc.returncode, "seconds": round(time.monotonic() - started, 1)}
    if (ctx.tmp / f"{name}.json").is_file():
        report.update(json.loads((ctx.tmp / f"{name}.json").read_text()))
    metrics = out / "metrics.jsonl"
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] if metrics.is_file() else []
    report["losses"] = [r["loss"] for r in rows if "loss" in r]
    if proc.returncode:
        report["stderr_tail"] = proc.stderr[-1500:]
    return report


# ----------------------------------------------------------------------------------------------- 5
def step_fp16_lora_gradscaler(ctx: Ctx) -> dict[str, Any]:
    """fp16 + LoRA + modules_to_save + unfrozen_parameters: one GradScaler step on this device."""
    from mudpuppy.runtime.model import build_model
    from mudpuppy.runtime.model.precision import Precision

    cfg = _config(_base_doc(ctx, adapter="lora", lora_r=4, lora_target_modules=["q_proj", "v_proj"],
                            lora_modules_to_save=["lm_head"],
                            unfrozen_parameters=[r".*layers\.0\.mlp\.down_proj\.weight"]))
    model, _ = build_model(cfg, None, Precision(mode="fp16", tf32=False, device=ctx.device))
    model.to(ctx.device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    dtypes = sorted({str(p.dtype) for p in trainable})
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    scaler = torch.amp.GradScaler(ctx.device)
    ids = torch.randint(3, 200, (2, 32), generator=torch.Generator().manual_seed(0)).to(ctx.device)
    with torch.autocast(ctx.device, dtype=torch.float16):
        loss = model(input_ids=ids, labels=ids).loss
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update()
    return {"ok": dtypes == ["torch.float32"] and bool(torch.isfinite(loss)), "trainable_dtypes": dtypes,
            "loss": float(loss)}


# ----------------------------------------------------------------------------------------------- 6 / 7
def step_fsdp_loading_and_preprocessing(ctx: Ctx) -> dict[str, Any]:
    """2 ranks: only rank 0 materialises weights and tokenizes (NCCL needs a GPU per rank)."""
    if ctx.dry or ctx.gpus < 2:
        # CPU-safe part: transformers' predicate sees FSDP RAM-efficient loading before the model exists, and a
        # rank other than 0 builds a meta skeleton (one process, gloo, LOCAL_RANK=1)
        import torch.distributed as dist

        from mudpuppy.runtime.env import read_env
        from mudpuppy.runtime.model.loader import _skeleton, weights_come_from_rank0
        from mudpuppy.runtime.parallel import before_model_load

        cfg = _config(_base_doc(ctx, fsdp_version=2, fsdp_config={"cpu_ram_efficient_loading": True}))
        with _env(ACCELERATE_USE_FSDP="false", FSDP_CPU_RAM_EFFICIENT_LOADING="false", LOCAL_RANK="1", RANK="0",
                  WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                  MUDPUPPY_FORCE_GLOO="1"):
            before_model_load(cfg, read_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}))
            try:
                from transformers import AutoConfig, AutoModelForCausalLM

                skip = weights_come_from_rank0()
                skeleton = _skeleton(AutoModelForCausalLM, AutoConfig.from_pretrained(_saved_model(ctx)), {})
                devices = sorted({p.device.type for p in skeleton.parameters()})
            finally:
                dist.destroy_process_group()
        return {"ok": skip and devices == ["meta"], "rank1_skips_weights": skip, "rank1_param_devices": devices,
                "note": "2-rank runs: tests/distributed/test_loading_on_ranks.py (gloo); on GPUs needs >= 2"}
    report = _recipe_run(ctx, "fsdp_loading", nproc=2, fsdp_version=2, bf16=True,
                         dataset_prepared_path=str(ctx.tmp / "prepared"),
                         fsdp_config={"cpu_ram_efficient_loading": True, "state_dict_type": "FULL_STATE_DICT",
                                      "transformer_layer_cls_to_wrap": "LlamaDecoderLayer",
                                      "mixed_precision_policy": {"param_dtype": "bf16", "reduce_dtype": "fp32"}})
    return {"ok": report["exit"] == 0 and report.get("dtensor") is True, **report}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------------------------------------- 8
def step_tiled_mlp(ctx: Ctx) -> dict[str, Any]:
    """Tiled MLP under bf16 autocast: gradients equal the same tiles through autograd; peak memory vs plain."""
    from mudpuppy.kernels.tiled_mlp import tiled_mlp

    hidden, inter, seq = (2048, 8192, 16384) if ctx.device == "cuda" else (32, 96, 64)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(hidden, inter), torch.nn.SiLU(), torch.nn.Linear(inter, hidden))
    mlp.to(ctx.device)
    params = list(mlp.parameters())
    x = torch.randn(1, seq, hidden, device=ctx.device, requires_grad=True)
    shards = 8

    def peak(fn: Callable[[], Any]) -> float:
        if ctx.device != "cuda":
            fn()
            return 0.0
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20

    result: dict[str, Any] = {}

    def plain() -> None:
        with torch.autocast(ctx.device, dtype=ctx.half):
            y = mlp(x)
        result["plain_dx"] = torch.autograd.grad(y.float().pow(2).sum(), x)[0]

    def tiled() -> None:
        with torch.autocast(ctx.device, dtype=ctx.half):
            y = tiled_mlp(mlp, x, shards, params)
        dx, *dparams = torch.autograd.grad(y.float().pow(2).sum(), [x, *params])
        result["tiled_dx"], result["tiled_dparams"] = dx, dparams

    plain_mib = peak(plain)
    tiled_mib = peak(tiled)
    ref = [torch.zeros_like(p) for p in params]
    for tile in torch.tensor_split(x.detach(), shards, dim=-2):
        with torch.autocast(ctx.device, dtype=ctx.half):
            y = mlp(tile)
        for acc, g in zip(ref, torch.autograd.grad(y.float().pow(2).sum(), params), strict=True):
            acc += g
    dx_err = float((result["tiled_dx"] - result["plain_dx"]).abs().max())
    dp_err = max(float((a - b).abs().max()) for a, b in zip(result["tiled_dparams"], ref, strict=True))
    ok = dx_err <= 1e-5 and dp_err <= 1e-4 and (ctx.device != "cuda" or tiled_mib < plain_mib)
    return {"ok": ok, "shape": [seq, hidden, inter], "dx_max_err": dx_err, "dparam_max_err": dp_err,
            "peak_mib_plain": plain_mib, "peak_mib_tiled": tiled_mib}


# ----------------------------------------------------------------------------------------------- 9
def step_precision(ctx: Ctx) -> dict[str, Any]:
    """bf16 auto on this device; merge-lora writes the training dtype."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mudpuppy.runtime.merge import merge_lora
    from mudpuppy.runtime.model.precision import resolve_precision

    auto = resolve_precision(_config(_base_doc(ctx)), device=ctx.device).mode
    native = bool(torch.cuda.is_bf16_supported(including_emulation=False)) if ctx.device == "cuda" else None
    torch.manual_seed(3)
    adapter = ctx.tmp / "adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(_saved_model(ctx)),
                   LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
                   ).save_pretrained(adapter)
    cfg = _config(_base_doc(ctx, adapter="lora", lora_r=4, fp16=True, bf16=False, output_dir=str(ctx.tmp / "m")))
    merged = merge_lora(cfg, lora_model_dir=str(adapter))
    header = (merged / "model.safetensors").read_bytes()
    size = int.from_bytes(header[:8], "little")
    dtypes = sorted({v["dtype"] for k, v in json.loads(header[8: 8 + size]).items() if k != "__metadata__"})
    want_auto = ("bf16" if native else "fp16") if ctx.device == "cuda" else "fp32"
    return {"ok": auto == want_auto and dtypes == ["F16"], "bf16_auto_resolves_to": auto,
            "native_bf16": native, "merged_fp16_config_dtypes": dtypes}


# ----------------------------------------------------------------------------------------------- 10
def step_triton_kernels(ctx: Ctx) -> dict[str, Any]:
    """RMSNorm, GLU, fused linear CE and the LoRA Q/K/V/O kernels vs their torch references, every gradient.

    Its own process (bench/gpu/triton_kernels.py): under ``--dry`` Triton's interpreter must be switched on
    before triton is first imported, which this process has already done without it.
    """
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        raise Skip("triton is not installed (pip install '.[gpu]')")
    cmd = [sys.executable, str(Path(__file__).with_name("triton_kernels.py"))] + (["--interpret"] if ctx.dry else [])
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"ok": False, "exit": proc.returncode, "stderr": proc.stderr[-2000:]}
    report = json.loads(lines[-1])
    worst = {k: max(v["errors"].values()) for k, v in report["kernels"].items()}
    failed = sorted(k for k, v in report["kernels"].items() if not v["ok"])
    return {"ok": report["ok"] and proc.returncode == 0, "interpreted": report["interpreted"],
            "worst_rel_err": worst, "failed": failed, "kernels": report["kernels"]}


# ----------------------------------------------------------------------------------------------- e2e
def step_train_bf16_flash_packing(ctx: Ctx) -> dict[str, Any]:
    """A short real run: LoRA, bf16, packing, micro_batch_size 2, flash attention when installed, LoRA kernels."""
    if ctx.dry:
        raise Skip("GPU only (the CPU bf16 run is tests/e2e/test_bf16_runs.py)")
    from transformers.utils import is_flash_attn_2_available

    keys: dict[str, Any] = {"adapter": "lora", "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
                            "lora_target_linear": True, "sample_packing": True, "bf16": True,
                            "lora_mlp_kernel": True, "lora_qkv_kernel": True, "lora_o_kernel": True}
    if is_flash_attn_2_available():
        keys["flash_attention"] = True
    report = _recipe_run(ctx, "e2e", **{**keys, "max_steps": 2})
    report["flash_attention"] = bool(keys.get("flash_attention"))
    return {"ok": report["exit"] == 0 and len(report["losses"]) == 2, **report}


STEPS: list[tuple[str, str, Callable[[Ctx], dict[str, Any]]]] = [
    ("1", "flash + packing, micro batch 4", step_flash_packing),
    ("2", "LoRA kernels on k-bit weights, bf16 autocast", step_lora_kernels_kbit),
    ("3", "k-bit model placement per rank", step_kbit_device_map),
    ("4", "ZeRO-3 offload, 1 process, no torchrun", step_deepspeed_zero3_offload),
    ("5", "fp16 + LoRA with GradScaler", step_fp16_lora_gradscaler),
    ("6+7", "FSDP RAM-efficient loading, rank-0 preprocessing", step_fsdp_loading_and_preprocessing),
    ("8", "tiled MLP under autocast", step_tiled_mlp),
    ("9", "bf16 auto, merge dtype", step_precision),
    ("10", "Triton kernels (RMSNorm, GLU, linear CE, LoRA QKV/O) vs torch", step_triton_kernels),
    ("e2e", "bf16 LoRA + packing + flash run", step_train_bf16_flash_packing),
]


def run(dry: bool, out: Path, only: set[str] | None = None) -> list[dict[str, Any]]:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not dry and not gpus:
        raise SystemExit("bench/gpu: no CUDA GPU here; use --dry for the CPU-safe parts")
    results = []
    with tempfile.TemporaryDirectory(prefix="mudpuppy-gpu-") as tmp:
        ctx = Ctx(dry=dry, device="cpu" if dry else "cuda", gpus=gpus, tmp=Path(tmp))
        for item, title, fn in STEPS:
            if only and item not in only:
                continue
            started = time.monotonic()
            try:
                detail = fn(ctx)
                status = "pass" if detail.pop("ok") else "FAIL"
            except Skip as exc:
                status, detail = "skip", {"reason": str(exc)}
            except Exception as exc:  # a crash is a finding; keep going with the other steps
                status = "FAIL"
                detail = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
            results.append({"item": item, "check": title, "status": status,
                            "seconds": round(time.monotonic() - started, 2), "detail": _plain(detail)})
            print(f"[{status}] {item} {title} ({results[-1]['seconds']} s)", flush=True)
    write_reports(results, out, dry=dry, gpus=gpus)
    return results


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    return str(value)


def write_reports(results: list[dict[str, Any]], out: Path, *, dry: bool, gpus: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name(0) if gpus else platform.processor() or "cpu"
    meta = {"mode": "dry" if dry else "gpu", "device": device, "gpus": gpus, "torch": torch.__version__,
            "python": platform.python_version()}
    (out / "results.json").write_text(json.dumps({**meta, "steps": results}, indent=1) + "\n")
    lines = [f"# bench/gpu ({meta['mode']}): {device}, torch {meta['torch']}", "",
             "| item | check | status | seconds | key numbers |", "|---|---|---|---|---|"]
    for r in results:
        numbers = ", ".join(f"{k}={v}" for k, v in r["detail"].items()
                            if k not in ("trace", "stderr_tail") and not isinstance(v, (dict, list)))
        lines.append(f"| {r['item']} | {r['check']} | {r['status']} | {r['seconds']} | {numbers[:300]} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry", action="store_true", help="CPU-safe parts only (CI)")
    parser.add_argument("--out", default="bench/gpu/out", help="folder for results.json and results.md")
    parser.add_argument("--only", default="", help="comma-separated items, e.g. 1,4,6+7")
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()} or None
    results = run(args.dry, Path(args.out), only)
    return 1 if any(r["status"] == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
