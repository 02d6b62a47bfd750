"""End-to-end CPU runs: LoRA + packing, full fine-tune (Qwen2 shape, unpacked), outputs, merge-lora, inference,
evaluate, and the CLI's exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mudpuppy.launcher.cli import main as cli_main
from mudpuppy.launcher.config import load_config
from mudpuppy.runtime.entry import main as runtime_main
from mudpuppy.runtime.entry import run_location
from tests.fixtures.tiny import build_tiny_model_dir

pytestmark = pytest.mark.slow


def test_lora_packed_run_writes_adapter_tokenizer_card_metrics_then_merges_exactly(tiny_cfg, capsys):
    path, cfg = tiny_cfg("lora", save_total_limit=1, val_set_size=0.1, eval_steps=3)
    assert run_location(str(path)) == 0
    out = Path(cfg["output_dir"])
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "README.md"):
        assert (out / name).is_file(), name
    assert "lora_r: 4" in (out / "README.md").read_text()
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-6"]  # limit 1 keeps the newest
    assert not (out / ".staging").exists() or not any((out / ".staging").iterdir())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
    assert all(r["tokens_per_second"] > 0 for r in train_rows)
    assert any("eval_loss" in r for r in rows)
    printed = capsys.readouterr().out
    assert "step 6/6 | loss" in printed and "tok/s" in printed and "eta" in printed

    # merge-lora: merged logits == base + adapter logits
    assert _cli(["merge-lora", str(path)]) == 0
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mudpuppy.runtime.merge import load_base_and_tokenizer

    config = load_config(path).config
    base, tokenizer, _ = load_base_and_tokenizer(config, on_cpu=True)
    with_adapter = PeftModel.from_pretrained(base, str(out)).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(out / "merged")).eval()
    ids = torch.tensor([[1, 17, 99, 250, 3, 64]])
    with torch.no_grad():
        expected = with_adapter(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
    lora_b = [v for k, v in with_adapter.state_dict().items() if "lora_B" in k]
    assert any(t.abs().sum() > 0 for t in lora_b)  # a trained adapter, so the check can fail

    # inference with the alpaca prompt format, and evaluate
    from mudpuppy.runtime.inference import format_prompt, generate

    prompt = format_prompt(config, tokenizer, "Add 2 and 3.")
    assert prompt.endswith("### Response:\n") and "Add 2 and 3." in prompt
    expected_text = generate(with_adapter, tokenizer, prompt, max_new_tokens=5)
    capsys.readouterr()
    assert _cli(["inference", str(path), "--prompt", "Add 2 and 3.", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out == expected_text + "\n"
    assert _cli(["evaluate", str(path)]) == 0
    assert "eval_loss:" in capsys.readouterr().out
    assert json.loads((out / "eval_metrics.json").read_text())["eval_loss"] > 0


def test_full_finetune_qwen2_unpacked_learns_and_saves_a_model(tiny_cfg, tmp_path):
    model_dir = build_tiny_model_dir(tmp_path / "tiny-qwen2", arch="qwen2")
    path, cfg = tiny_cfg("full", base_model=str(model_dir), adapter=None, lora_r=None, lora_alpha=None,
                         lora_dropout=None, lora_target_linear=None, sample_packing=False, max_steps=10,
                         learning_rate=0.003, save_strategy="no", save_steps=None, micro_batch_size=4,
                         gradient_accumulation_steps=1)
    assert run_location(str(path)) == 0
    out = Path(cfg["output_dir"])
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen2"
    assert not list(out.glob("checkpoint-*"))
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert sum(losses[-3:]) / 3 < losses[0] - 0.1


def test_a_bundle_folder_runs_from_its_own_workdir_and_user_errors_exit_2(tiny_cfg, tmp_path, monkeypatch, capsys):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    _, cfg = tiny_cfg("unused")
    cfg["output_dir"] = "out"
    cfg["max_steps"] = 1
    import yaml

    (bundle / "config.yml").write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("MUDPUPPY_WORKDIR", str(work))
    monkeypatch.chdir(tmp_path)
    assert runtime_main([str(bundle)]) == 0
    assert (work / "out" / "adapter_model.safetensors").is_file()

    bad = tmp_path / "bad.yml"
    cfg.update(optimizer="adamw_torchh")
    bad.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert runtime_main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "optimizer: unknown optimizer 'adamw_torchh'" in err  # at config load
    assert "Traceback" not in err
    assert runtime_main([str(tmp_path / "missing.yml")]) == 2


def _cli(argv: list[str]) -> int:
    try:
        cli_main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
