"""Trainer overhead: mudpuppy's runtime vs a hand-written plain HF Trainer loop, same tiny model, same data (CPU).

Each variant runs in its own child process (so peak RSS is its own) and trains ``STEPS`` optimizer steps on the
bundled tiny Llama (weights from its config) and ``alpaca_tiny.jsonl`` tokenized by our pipeline. Reported:
non-pad tokens/s over the train loop, peak RSS, and the ratio ours/plain. A last row times
``mudpuppy train templates/examples/tiny-alpaca.yml`` from process start to its first logged step.

    .venv/bin/python bench/train.py [--steps 40] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "templates" / "examples"


def config(out: Path, steps: int, packing: bool) -> dict:
    return {
        "base_model": str(EXAMPLES / "tiny-llama"), "reinit_weights": True, "seed": 42,
        "datasets": [{"path": str(EXAMPLES / "data" / "alpaca_tiny.jsonl"), "type": "alpaca"}],
        "sequence_len": 256, "sample_packing": packing, "adapter": "lora", "lora_r": 8, "lora_alpha": 16,
        "lora_target_linear": True, "micro_batch_size": 4, "gradient_accumulation_steps": 2, "max_steps": steps,
        "learning_rate": 2e-3, "optimizer": "adamw_torch", "lr_scheduler": "cosine", "logging_steps": 10,
        "save_strategy": "no", "bf16": False, "output_dir": str(out),
    }


def child_ours(out: Path, steps: int, packing: bool) -> dict:
    import io

    import yaml

    from mudpuppy.launcher.config import load_config_text
    from mudpuppy.runtime.train.run import run_training

    cfg = load_config_text(yaml.safe_dump(config(out, steps, packing))).config
    assert run_training(cfg, stream=io.StringIO()) == 0
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    return {"tokens": last["num_input_tokens_seen"], "seconds": last["train_runtime"]}


def child_plain(out: Path, steps: int) -> dict:
    """What a user would write by hand: tokenizer, datasets, peft LoRA, DataCollatorForSeq2Seq, Trainer."""
    import torch
    import yaml
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from mudpuppy.launcher.config import load_config_text
    from mudpuppy.runtime.data import prepare_datasets
    from mudpuppy.runtime.tokenizer import load_tokenizer

    cfg = load_config_text(yaml.safe_dump(config(out, steps, False))).config
    tokenizer = load_tokenizer(cfg)
    train_ds, _ = prepare_datasets(cfg, tokenizer)
    torch.manual_seed(42)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(cfg.base_model))
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=4, gradient_accumulation_steps=2,
                             max_steps=steps, learning_rate=2e-3, optim="adamw_torch", lr_scheduler_type="cosine",
                             logging_steps=10, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                             include_num_input_tokens_seen="non_padding", remove_unused_columns=False)
    columns = [c for c in train_ds.column_names if c not in ("input_ids", "attention_mask", "labels")]
    trainer = Trainer(model=model, args=args, train_dataset=train_ds.remove_columns(columns),
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True))
    metrics = trainer.train().metrics
    return {"tokens": trainer.state.num_input_tokens_seen, "seconds": metrics["train_runtime"]}


def run_child(kind: str, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, __file__, "--child", kind, "--out", tmp, "--steps", str(steps)],
                              capture_output=True, text=True, cwd=REPO, timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def startup_to_first_step() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        mudpuppy = Path(sys.executable).with_name("mudpuppy")
        start = time.monotonic()
        proc = subprocess.Popen([str(mudpuppy), "train", "examples/tiny-alpaca.yml",
                                 "--output_dir", tmp, "--save_steps", "100000"],
                                cwd=REPO / "templates", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        elapsed = float("nan")
        for line in proc.stdout:
            if line.startswith("step 1/"):
                elapsed = time.monotonic() - start
                break
        proc.kill()
        proc.wait()
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=["ours", "ours-packed", "plain"])
    parser.add_argument("--out")
    parser.add_argument("--startup-only", action="store_true")
    opts = parser.parse_args()
    if opts.startup_only:
        print(f"startup to first logged step: {startup_to_first_step():.1f} s")
        return
    if opts.child:
        out = Path(opts.out)
        result = (child_plain(out, opts.steps) if opts.child == "plain"
                  else child_ours(out, opts.steps, opts.child == "ours-packed"))
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    rows: dict[str, list[dict]] = {"plain": [], "ours": [], "ours-packed": []}
    for _ in range(opts.repeats):  # interleaved, so machine load hits every variant alike
        for kind in rows:
            rows[kind].append(run_child(kind, opts.steps))
    best = {k: max(v, key=lambda r: r["tokens"] / r["seconds"]) for k, v in rows.items()}
    base = best["plain"]["tokens"] / best["plain"]["seconds"]
    print(f"| variant ({opts.steps} steps, best of {opts.repeats}) | tokens/s (non-pad) | ratio vs plain "
          f"| peak RSS MB | RSS ratio |")
    print("|---|---|---|---|---|")
    for kind, r in best.items():
        tps = r["tokens"] / r["seconds"]
        print(f"| {kind} | {tps:,.0f} | {tps / base:.2f} | {r['peak_rss_mb']:.0f} "
              f"| {r['peak_rss_mb'] / best['plain']['peak_rss_mb']:.2f} |")
    print(f"\nstartup of `mudpuppy train examples/tiny-alpaca.yml` to its first logged step: "
          f"{startup_to_first_step():.1f} s")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
