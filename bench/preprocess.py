"""Preprocess end to end as a user sees it: ``mudpuppy preprocess`` vs Axolotl's ``preprocess`` vs a plain
``datasets.map`` tokenization, each its own process, same data, same tokenizer, same config, in one run.

    .venv/bin/python bench/preprocess.py [--rows 20000,100000] [--sets alpaca,chat] [--repeats 3]
        [--sequence-len 1024] [--axolotl /path/to/axolotl-venv/bin/python] [--out results.md]

Generates an alpaca set and a chat set from the shipped examples (random lengths, seeded) and writes one
config (tiny tokenizer from templates/examples/tiny-llama, ``sample_packing: true``, ``seed: 42`` since
Axolotl shuffles unseeded otherwise, a fresh ``dataset_prepared_path`` per run). Timed from process start to
exit:

- baseline, ``python bench/preprocess.py --baseline``: import datasets + transformers, load the tokenizer,
  ``load_dataset`` the JSONL, one ``map`` that tokenizes each row (alpaca: prompt+response as one text,
  batched; chat: ``apply_chat_template``, no masking); nothing is written; ``load_from_cache_file=False``: with
  datasets' default the same file's map in repeats 2-3 is read back from datasets' cache, not tokenized;
- ``python -m mudpuppy preprocess cfg.yml``;
- with ``--axolotl``: ``python -m axolotl.cli.preprocess cfg.yml`` (AXOLOTL_DO_NOT_TRACK=1 HF_HUB_OFFLINE=1).

Within a repeat the three run back to back (order rotated per repeat); the table gives medians and the ratios
of medians. After the first repeat the rows both tools saved are compared (input_ids and labels, in order).
Prints a markdown table and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOK = ROOT / "templates" / "examples" / "tiny-llama"
DATA = ROOT / "templates" / "examples" / "data"
CHATML = ROOT / "templates" / "chat" / "chatml.jinja"


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


def baseline_child(kind: str, path: str, sequence_len: int) -> None:
    """The plain baseline, run as its own process (``--baseline``): tokenize only, like a hand-written script."""
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(TOK)
    raw = datasets.load_dataset("json", data_files=path, split="train")
    if kind == "alpaca":
        def fn(b):  # noqa: ANN001, ANN202
            texts = [f"### Instruction:\n{i}\n\n### Input:\n{x}\n\n### Response:\n{o}"
                     for i, x, o in zip(b["instruction"], b["input"], b["output"], strict=True)]
            return tokenizer(texts, truncation=True, max_length=sequence_len)
        out = raw.map(fn, batched=True, remove_columns=raw.column_names, load_from_cache_file=False)
    else:
        template = CHATML.read_text()

        def fn(r):  # noqa: ANN001, ANN202
            return {"input_ids": tokenizer.apply_chat_template(r["messages"], chat_template=template,
                                                               tokenize=True, return_dict=False)}
        out = raw.map(fn, remove_columns=raw.column_names, load_from_cache_file=False)
    print(json.dumps({"rows": len(out)}))


def write_config(work: Path, kind: str, data: Path, sequence_len: int, tag: str) -> Path:
    import yaml

    cfg = {"base_model": str(TOK), "sequence_len": sequence_len, "sample_packing": True, "micro_batch_size": 1,
           "num_epochs": 1, "learning_rate": 1e-4, "seed": 42, "output_dir": str(work / f"out-{tag}"),
           "dataset_prepared_path": str(work / f"prepared-{tag}"),
           "datasets": [{"path": str(data), "type": "alpaca" if kind == "alpaca" else "chat_template"}]}
    if kind == "chat":
        cfg["chat_template"] = "chatml"
    path = work / f"{tag}.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    # run from the work folder: the repo root holds top-level names (kernels/, runtime/) that would shadow packages
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(log.parent),
                              check=False)
    seconds = time.perf_counter() - start
    if proc.returncode:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise SystemExit(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{tail}")
    return seconds


def compare_saved(ours: Path, theirs: Path) -> str:
    """Both tools saved their (unpacked) train rows: same count, same input_ids and labels, same order?"""
    import datasets

    mine = [p for p in sorted(ours.rglob("state.json")) if p.parent.name == "train"]
    axo = sorted(theirs.rglob("state.json"))
    if len(mine) != 1 or len(axo) != 1:
        return f"? ({len(mine)} / {len(axo)} saved sets found)"
    a = datasets.load_from_disk(str(mine[0].parent)).with_format("arrow")[:]
    b = datasets.load_from_disk(str(axo[0].parent)).with_format("arrow")[:]
    if a.num_rows != b.num_rows:
        return f"no ({a.num_rows:,} vs {b.num_rows:,} rows)"
    pairs = [list(zip(t.column("input_ids").to_pylist(), t.column("labels").to_pylist(), strict=True)) for t in (a, b)]
    if pairs[0] == pairs[1]:
        return f"yes ({a.num_rows:,} rows, same order)"
    key = repr
    if sorted(pairs[0], key=key) == sorted(pairs[1], key=key):
        return f"same rows, other order ({a.num_rows:,})"
    return "no (input_ids/labels differ)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="20000,100000", help="comma-separated row counts")
    parser.add_argument("--sets", default="alpaca,chat", help="comma-separated: alpaca, chat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sequence-len", type=int, default=1024)
    parser.add_argument("--axolotl", default=None, help="python of a venv with axolotl installed")
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    parser.add_argument("--baseline", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        baseline_child(args.baseline[0], args.baseline[1], args.sequence_len)
        return
    env = {**os.environ, "AXOLOTL_DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}
    command = "python " + shlex.join(["bench/preprocess.py", *sys.argv[1:]])
    header = ["| set | rows | datasets.map s | mudpuppy s | " + ("Axolotl s | vs Axolotl | " if args.axolotl else "")
              + "vs datasets.map | rows identical |",
              "|---|---|---|---|" + ("---|---|" if args.axolotl else "") + "---|---|"]
    lines = list(header)
    raw: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mp-bench-prep-") as tmp:
        work = Path(tmp)
        for n in (int(x) for x in args.rows.split(",")):
            for kind in args.sets.split(","):
                rng = random.Random(n)
                data = work / f"{kind}-{n}.jsonl"
                (make_alpaca if kind == "alpaca" else make_chat)(data, n, rng)
                times: dict[str, list[float]] = {"base": [], "ours": [], "axo": []}
                identical = "-"
                for rep in range(args.repeats):
                    tag = f"{kind}-{n}-{rep}"
                    ours_cfg = write_config(work, kind, data, args.sequence_len, f"ours-{tag}")
                    axo_cfg = write_config(work, kind, data, args.sequence_len, f"axo-{tag}")
                    runs = {
                        "base": [sys.executable, str(Path(__file__).resolve()), "--sequence-len",
                                 str(args.sequence_len), "--baseline", kind, str(data)],
                        "ours": [sys.executable, "-m", "mudpuppy", "preprocess", str(ours_cfg)],
                    }
                    if args.axolotl:
                        runs["axo"] = [args.axolotl, "-m", "axolotl.cli.preprocess", str(axo_cfg)]
                    order = list(runs)
                    order = order[rep % len(order):] + order[: rep % len(order)]
                    for name in order:
                        seconds = timed(runs[name], env, work / f"{name}-{tag}.log")
                        times[name].append(seconds)
                        print(f"{kind} {n:,} repeat {rep + 1}: {name} {seconds:.1f}s", file=sys.stderr, flush=True)
                    if rep == 0 and args.axolotl:
                        identical = compare_saved(work / f"prepared-ours-{tag}", work / f"prepared-axo-{tag}")
                        print(f"{kind} {n:,}: rows identical: {identical}", file=sys.stderr, flush=True)
                med = {k: statistics.median(v) for k, v in times.items() if v}
                cells = [kind, f"{n:,}", f"{med['base']:.1f}", f"{med['ours']:.1f}"]
                if args.axolotl:
                    cells += [f"{med['axo']:.1f}", f"**{med['axo'] / med['ours']:.2f}x**"]
                cells += [f"{med['base'] / med['ours']:.2f}x", identical]
                lines.append("| " + " | ".join(cells) + " |")
                raw.append(f"{kind} {n:,}: " + "; ".join(f"{k} " + ", ".join(f"{s:.1f}" for s in v)
                                                      for k, v in times.items() if v))
                print(lines[-1], file=sys.stderr, flush=True)
    text = "\n".join([f"Command: `{command}` ({args.repeats} repeats, medians; ratio = other s / mudpuppy s)", "",
                      *lines, "", "Per repeat (s):", "", *[f"- {r}" for r in raw]]) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
