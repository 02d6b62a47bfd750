"""Preprocess throughput: mudpuppy's pipeline vs a plain ``datasets.map`` tokenization, same data, same run.

    .venv/bin/python bench/preprocess.py [--alpaca-rows 100000] [--chat-rows 50000]

Generates an alpaca set and a chat set from the shipped examples (random lengths), then times
``mudpuppy.runtime.data.prepare`` (sequence_len 2048, sample_packing on, no cache) and a baseline that just
tokenizes each row with one ``datasets.map`` (alpaca: prompt+response text; chat: apply_chat_template, no
masking). Prints a markdown table: rows/s, tokens/s, ratio to baseline, packing efficiency.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TOK = ROOT / "templates" / "examples" / "tiny-llama"
DATA = ROOT / "templates" / "examples" / "data"


def make_alpaca(path: Path, n: int, rng: random.Random) -> None:
    base = [json.loads(x) for x in (DATA / "alpaca_tiny.jsonl").read_text().splitlines()]
    with path.open("w") as f:
        for _ in range(n):
            r = rng.choice(base)
            k = rng.randint(1, 12)
            f.write(json.dumps({"instruction": r["instruction"], "input": r["input"],
                                "output": " ".join([r["output"]] * k)}) + "\n")


def make_chat(path: Path, n: int, rng: random.Random) -> None:
    base = [json.loads(x)["messages"] for x in (DATA / "chat_tiny.jsonl").read_text().splitlines()]
    with path.open("w") as f:
        for _ in range(n):
            messages: list[dict] = []
            for _ in range(rng.randint(1, 4)):
                convo = [m for m in rng.choice(base) if m["role"] != "system"]
                messages += [{**m, "content": " ".join([m["content"]] * rng.randint(1, 6))} for m in convo]
            f.write(json.dumps({"messages": messages}) + "\n")


def baseline(path: Path, kind: str, tokenizer) -> tuple[float, int, int]:  # noqa: ANN001
    import datasets

    start = time.perf_counter()  # from the file, like ours: loading is part of the work both do
    raw = datasets.load_dataset("json", data_files=str(path), split="train")
    if kind == "alpaca":
        def fn(b):  # noqa: ANN001, ANN202
            texts = [f"### Instruction:\n{i}\n\n### Input:\n{x}\n\n### Response:\n{o}"
                     for i, x, o in zip(b["instruction"], b["input"], b["output"], strict=True)]
            return tokenizer(texts, truncation=True, max_length=2048)
        out = raw.map(fn, batched=True, remove_columns=raw.column_names)
    else:
        def fn(r):  # noqa: ANN001, ANN202
            return {"input_ids": tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=False)}
        out = raw.map(fn, remove_columns=raw.column_names)
    seconds = time.perf_counter() - start
    return seconds, len(out), sum(len(x) for x in out["input_ids"])


def ours(path: Path, kind: str, workdir: Path) -> tuple[float, int, int, float]:
    from mudpuppy.launcher.config import load_config_text
    from mudpuppy.runtime.data import prepare
    from mudpuppy.runtime.tokenizer import load_tokenizer

    ds = {"path": str(path), "type": "alpaca" if kind == "alpaca" else "chat_template"}
    cfg = load_config_text(yaml.safe_dump({
        "base_model": str(TOK), "sequence_len": 2048, "sample_packing": True, "micro_batch_size": 1,
        "num_epochs": 1, "learning_rate": 1e-4, "output_dir": str(workdir / "out"), "datasets": [ds],
        **({"chat_template": "chatml"} if kind == "chat" else {}),
    })).config
    tokenizer = load_tokenizer(cfg)
    start = time.perf_counter()
    result = prepare(cfg, tokenizer)
    seconds = time.perf_counter() - start
    tokens = sum(len(x) for x in result.train["input_ids"])
    return seconds, len(result.train), tokens, result.stats.packing_efficiency or 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alpaca-rows", type=int, default=100_000)
    parser.add_argument("--chat-rows", type=int, default=50_000)
    args = parser.parse_args()
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(TOK)
    tokenizer.chat_template = (ROOT / "templates" / "chat" / "chatml.jinja").read_text()
    rng = random.Random(0)
    lines = ["| set | rows | pipeline | seconds | rows/s | tokens/s | vs baseline | packing eff. |",
             "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for kind, n in (("alpaca", args.alpaca_rows), ("chat", args.chat_rows)):
            if n <= 0:
                continue
            path = work / f"{kind}.jsonl"
            (make_alpaca if kind == "alpaca" else make_chat)(path, n, rng)
            b_sec, b_rows, b_tok = baseline(path, kind, tokenizer)
            o_sec, o_rows, o_tok, eff = ours(path, kind, work)
            lines.append(f"| {kind} | {n:,} | datasets.map baseline | {b_sec:.1f} | {b_rows / b_sec:,.0f} | "
                         f"{b_tok / b_sec:,.0f} | 1.00x | - |")
            lines.append(f"| {kind} | {n:,} | mudpuppy prepare | {o_sec:.1f} | {o_rows / o_sec:,.0f} | "
                         f"{o_tok / o_sec:,.0f} | {b_sec / o_sec:.2f}x | {eff:.3f} |")
            print(lines[-2], lines[-1], sep="\n", file=sys.stderr)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
