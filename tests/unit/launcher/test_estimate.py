"""The estimate's arithmetic against hand-computed numbers, on config.json files of real models' shapes.

The parameter totals are the published ones (Llama-3.1-8B: 8,030,261,248; Qwen2.5-0.5B: 494,032,768, both as
Hugging Face's model pages list them); every other figure is worked out by hand in the comments.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mudpuppy.launcher import estimate as est
from mudpuppy.launcher.errors import UserError

pytestmark = pytest.mark.timeout(60)

LLAMA_31_8B = {  # meta-llama/Llama-3.1-8B config.json (shape keys)
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "head_dim": 128,
    "vocab_size": 128256, "tie_word_embeddings": False, "attention_bias": False, "rms_norm_eps": 1e-05,
}
QWEN25_05B = {  # Qwen/Qwen2.5-0.5B config.json (shape keys); q/k/v carry biases
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
    "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2, "vocab_size": 151936,
    "tie_word_embeddings": True,
}


def _model(tmp_path: Path, name: str, config: dict) -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_parameter_counts_match_the_published_totals(tmp_path: Path) -> None:
    llama = est.load_shape(_model(tmp_path, "llama", LLAMA_31_8B))
    # per layer linear: q 4096*4096 + k,v 2*4096*1024 + o 4096*4096 + mlp 3*4096*14336 = 218,103,808
    assert llama.layer_linear_params == 218_103_808
    # embed 128256*4096 = 525,336,576 (twice: untied head) + 32*(218,103,808 + 2*4096) + 4096
    assert llama.total_params == 8_030_261_248
    # N: 32 * 218,103,808 + the head 525,336,576
    assert llama.matmul_params == 7_504_658_432
    qwen = est.load_shape(_model(tmp_path, "qwen", QWEN25_05B))
    # per layer: q,o 2*896*896 + k,v 2*896*128 + biases 896+128+128 + mlp 3*896*4864 + norms 2*896 = 14,912,384
    assert qwen.total_params == 151936 * 896 + 24 * 14_912_384 + 896 == 494_032_768
    # N: the layers' linear weights and biases 24 * (14,912,384 - 1792) = 357,854,208 + the tied head 136,134,656
    assert qwen.matmul_params == 493_988_864


def test_lora_parameters(tmp_path: Path) -> None:
    llama = est.load_shape(_model(tmp_path, "llama", LLAMA_31_8B))
    # r=16 on all linear layers: 16*[(4096+4096)*2 + (4096+1024)*2 + (4096+14336)*3] = 1,310,720 per layer
    assert est.lora_params(llama, 16, None, True) == 32 * 1_310_720 == 41_943_040
    # q and v only, r=8: 8*(8192 + 5120) * 32 = 3,407,872 (PEFT prints this for Llama-3-8B's default LoRA)
    assert est.lora_params(llama, 8, ["q_proj", "v_proj"], False) == 3_407_872
    with pytest.raises(UserError, match="matches none"):
        est.lora_params(llama, 8, ["c_attn"], False)


def test_training_flops_lora_and_full(tmp_path: Path) -> None:
    llama = est.load_shape(_model(tmp_path, "llama", LLAMA_31_8B))
    # 1000 rows of 1000 tokens: 1,000,000 tokens, sum(len^2) = 1e9; one epoch
    data = est.DataSize(rows=1000, tokens=1_000_000, sum_sq_len=1_000_000_000, batches_rows=1000)
    one_epoch = est.Steps(per_epoch=10, total=10, epochs=1.0)
    lora = est.training_flops(llama, data, one_epoch, lora=41_943_040, checkpointing=False)
    # 4N + 6 N_lora = 4*7,504,658,432 + 6*41,943,040 = 30,270,291,968 per token
    assert lora.per_token_linear == 30_270_291_968
    # attention 3 * 4 * L * (heads*head_dim) * sum(len^2) = 12 * 32 * 4096 * 1e9 = 1.572864e15
    assert lora.attention == 1_572_864_000_000_000
    assert lora.total == 30_270_291_968 * 1_000_000 + 1_572_864_000_000_000 == 31_843_155_968_000_000
    # full fine-tune with gradient checkpointing, two epochs: 8N per token and 4x the attention forward
    full = est.training_flops(llama, data, est.Steps(10, 20, 2.0), lora=None, checkpointing=True)
    assert full.per_token_linear == 8 * 7_504_658_432 == 60_037_267_456
    assert full.total == 2 * (60_037_267_456 * 1_000_000 + 16 * 32 * 4096 * 1_000_000_000)
    # LoRA with checkpointing: 6N + 8 N_lora
    gc = est.training_flops(llama, data, one_epoch, lora=41_943_040, checkpointing=True)
    assert gc.per_token_linear == 6 * 7_504_658_432 + 8 * 41_943_040 == 45_363_494_912


def test_gpu_hours_at_the_stated_mfu() -> None:
    # 3.1843155968e16 FLOPs on H100 (989.4 TFLOP/s) at MFU 0.30: / 2.9682e14 = 107.28 s = 0.029800 GPU-hours
    compute = est.compute_hours(31_843_155_968_000_000, "H100", 8, 2, mfu=0.30)
    assert compute.gpu_hours == pytest.approx(0.0298002, rel=1e-5)
    assert compute.wall_hours == pytest.approx(0.0298002 / 16, rel=1e-5)
    # 1e18 FLOPs on A100-80GB at 0.5: 1e18 / (312e12 * 0.5) / 3600 = 1.78063 GPU-hours
    assert est.compute_hours(1e18, "a100-80gb", 4, 1, mfu=0.5).gpu_hours == pytest.approx(1.780627, rel=1e-6)
    unknown = est.compute_hours(1e18, "MI300X", 8, 1, mfu=0.3)
    assert unknown.gpu_hours is None and "--peak-tflops" in unknown.notes[0]
    given = est.compute_hours(1e18, "MI300X", 8, 1, mfu=0.25, peak=1307.4)
    assert given.gpu_hours == pytest.approx(1e18 / (1307.4e12 * 0.25) / 3600)
    with pytest.raises(UserError, match="--mfu"):
        est.compute_hours(1e18, "H100", 1, 1, mfu=1.5)


def _cfg(**kw: object) -> SimpleNamespace:
    base = {"micro_batch_size": 2, "gradient_accumulation_steps": 4, "batch_size": None, "max_steps": None,
            "num_epochs": 3}
    return SimpleNamespace(**{**base, **kw})


def test_steps_follow_the_trainer_arithmetic() -> None:
    # 1000 packed sequences / (micro 2 * world 8) = 62.5 -> 63 batches; / accum 4 -> 16 steps per epoch; x3 = 48
    steps = est.plan_steps(_cfg(), 1000, 8)
    assert (steps.per_epoch, steps.total, steps.epochs) == (16, 48, 3.0)
    # batch_size 64 with micro 2 on 8 processes: accumulation 64 / 16 = 4, the same 16 per epoch; 1.5 epochs -> 24
    assert est.plan_steps(_cfg(batch_size=64, gradient_accumulation_steps=None, num_epochs=1.5), 1000, 8).total == 24
    # max_steps wins: 10 steps of 16 per epoch = 0.625 epochs
    capped = est.plan_steps(_cfg(max_steps=10), 1000, 8)
    assert (capped.total, capped.epochs) == (10, 0.625)


def test_modal_price_table_and_totals() -> None:
    from mudpuppy.launcher import estimate_prices

    price = estimate_prices.modal_price("H100!")
    # $0.001097/s * 3600 = $3.9492/h preemptible; nonpreemptible 3x = $11.8476/h
    assert price is not None and price.spot == pytest.approx(3.9492) and price.on_demand == pytest.approx(11.8476)
    assert price.as_of == "2026-05-07" and "modal.com/pricing" in price.source
    assert estimate_prices.modal_price("MI300X") is None
    assert estimate_prices.age_days("2026-05-07", now=1_796_169_600) == 209  # 2026-12-02 00:00 UTC


def test_missing_model_config_and_moe_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no config.json"):
        est.load_shape(str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="mixture-of-experts"):
        est.load_shape(_model(tmp_path, "moe", {**LLAMA_31_8B, "num_local_experts": 8}))
    with pytest.raises(UserError, match="hidden_size"):
        est.load_shape(_model(tmp_path, "odd", {"vocab_size": 10}))


def test_hf_cache_config_is_found_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = tmp_path / "hub"
    snapshot = hub / "models--meta-llama--Llama-3.1-8B" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(LLAMA_31_8B))
    (hub / "models--meta-llama--Llama-3.1-8B" / "refs").mkdir()
    (hub / "models--meta-llama--Llama-3.1-8B" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub))  # read at import time by huggingface_hub
    assert est.load_shape("meta-llama/Llama-3.1-8B").total_params == 8_030_261_248
