"""DPO throughput and peak memory: mudpuppy's ``rl: dpo`` path vs a hand-written plain TRL DPOTrainer script.

Same tiny Llama (weights from its config, same seed), same LoRA, same rows (tests/data/rl/toy_pairs.jsonl in
ChatML), same steps and batch; each side runs in its own process (so peak RSS is its own), alternating, and the
ratio ours/plain is reported per repeat. Tokens/s counts TRL's ``num_input_tokens_seen`` over ``train_runtime``.

    .venv/bin/python bench/preference.py [--steps 20] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "rl" / "toy_pairs.jsonl"
MODEL = ROOT / "templates" / "examples" / "tiny-llama"
COMMON = {"lr": 0.01, "batch": 4, "seq": 128, "r": 8, "alpha": 16, "seed": 7}


def ours(steps: int, out: Path) -> dict[str, float]:
    import yaml

    from mudpuppy.launcher.config import load_config_text
    from mudpuppy.runtime.train.run import run_training

    cfg = {"base_model": str(MODEL), "reinit_weights": True, "seed": COMMON["seed"], "rl": "dpo", "rl_beta": 0.1,
           "datasets": [{"path": str(DATA), "type": "chatml.prompt_pairs"}], "sequence_len": COMMON["seq"],
           "adapter": "lora", "lora_r": COMMON["r"], "lora_alpha": COMMON["alpha"], "lora_target_linear": True,
           "micro_batch_size": COMMON["batch"], "max_steps": steps, "learning_rate": COMMON["lr"],
           "optimizer": "adamw_torch", "lr_scheduler": "constant", "logging_steps": steps, "save_strategy": "no",
           "bf16": False, "output_dir": str(out)}
    config = load_config_text(yaml.safe_dump(cfg), name="bench.yml").config
    with open(os.devnull, "w") as sink:
        run_training(config, stream=sink)
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    final = next(r for r in reversed(logs) if "train_runtime" in r)
    return {"tokens": final["num_input_tokens_seen"], "seconds": final["train_runtime"]}


def plain(steps: int, out: Path) -> dict[str, float]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    data = Dataset.from_list([{
        "prompt": f"<|im_start|>user\n{r['prompt']}<|im_end|>\n<|im_start|>assistant\n",
        "chosen": f"{r['chosen']}<|im_end|>", "rejected": f"{r['rejected']}<|im_end|>"} for r in rows])
    data = data.shuffle(seed=COMMON["seed"])
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    torch.manual_seed(COMMON["seed"])
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(MODEL))
    lora = LoraConfig(r=COMMON["r"], lora_alpha=COMMON["alpha"], target_modules="all-linear", task_type="CAUSAL_LM")
    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=COMMON["batch"], max_steps=steps,
                     learning_rate=COMMON["lr"], optim="adamw_torch", lr_scheduler_type="constant", beta=0.1,
                     max_length=COMMON["seq"], logging_steps=steps, save_strategy="no", report_to="none",
                     use_cpu=True, bf16=False, seed=COMMON["seed"], disable_tqdm=True,
                     include_num_input_tokens_seen="non_padding")
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora)
    result = trainer.train()
    return {"tokens": trainer.state.num_input_tokens_seen, "seconds": result.metrics["train_runtime"]}


def child(which: str, steps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        result = (ours if which == "ours" else plain)(steps, Path(tmp) / "out")
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def run(which: str, steps: int) -> dict[str, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TRL_EXPERIMENTAL_SILENCE": "1"}
    proc = subprocess.run([sys.executable, __file__, "--child", which, "--steps", str(steps)], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=["ours", "plain"])
    opts = parser.parse_args()
    if opts.child:
        child(opts.child, opts.steps)
        return
    print("| repeat | plain tok/s | ours tok/s | ratio ours/plain | plain peak RSS MB | ours peak RSS MB | RSS ratio |")
    print("|---|---|---|---|---|---|---|")
    for i in range(opts.repeats):
        p, o = run("plain", opts.steps), run("ours", opts.steps)
        pt, ot = p["tokens"] / p["seconds"], o["tokens"] / o["seconds"]
        print(f"| {i + 1} | {pt:.0f} | {ot:.0f} | {ot / pt:.2f} | {p['peak_rss_mb']:.0f} | {o['peak_rss_mb']:.0f} | "
              f"{o['peak_rss_mb'] / p['peak_rss_mb']:.2f} |")


if __name__ == "__main__":
    main()
