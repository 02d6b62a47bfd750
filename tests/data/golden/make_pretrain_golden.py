"""Regenerate the streamed-pretraining goldens with the Axolotl oracle. Run from the repo root:

    AXOLOTL_DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 /work/axolotl-venv/bin/python tests/data/golden/make_pretrain_golden.py

Axolotl streams a local jsonl file offline (``path: json`` + ``data_files``, as ``load_dataset`` takes it), so each
case runs its whole ``_prepare_streaming_dataset`` on the tiny tokenizer and keeps the first rows it yields. With
``sample_packing`` Axolotl orders each buffer with torch's ``RandomSampler`` before packing, so for that case the
golden keeps the windows (the per-sample pieces, split at ``position_ids`` restarts) instead of the bins. The
oracle's transformers 5.16 returns at most two overflow windows per text (the second cut short, the rest of the text
lost); transformers 5.24 returns them all, which the test allows for. Never imported by tests.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = "tests/data/golden/inputs/pretrain.jsonl"
TOK = "templates/examples/tiny-llama"
BASE = {"special_tokens": {"pad_token": "<pad>"}, "sequence_len": 48, "micro_batch_size": 2, "max_steps": 5,
        "seed": 42, "streaming_multipack_buffer_size": 16,
        "shuffle_merged_datasets": True, "pretrain_multipack_attn": True, "sample_packing_bin_size": 200,
        "pretraining_dataset": [{"path": "json", "name": None, "skip": 0, "split": "train", "type": "pretrain",
                                 "text_column": "text", "data_files": DATA}]}
CASES = {
    "pretrain_concat": {"sample_packing": False, "pretraining_sample_concatenation": True},
    "pretrain_plain": {"sample_packing": False, "pretraining_sample_concatenation": False},
    "pretrain_noshuffle": {"sample_packing": False, "pretraining_sample_concatenation": True,
                           "shuffle_merged_datasets": False},
    "pretrain_packed": {"sample_packing": True},
}
ROWS = 12


def windows(row: dict) -> list[list[int]]:
    ids, pos = row["input_ids"], row["position_ids"]
    out: list[list[int]] = []
    for token, p in zip(ids, pos, strict=True):
        if p == 0:
            out.append([])
        out[-1].append(token)
    return out


def main() -> None:
    import torch
    from axolotl.utils.data.sft import _prepare_streaming_dataset
    from axolotl.utils.dict import DictDefault
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TOK)
    tokenizer.add_special_tokens(BASE["special_tokens"])  # what Axolotl's load_tokenizer does with special_tokens
    for case, extra in CASES.items():
        torch.manual_seed(42)
        cfg = DictDefault({**BASE, **extra})
        train, _, steps, _ = _prepare_streaming_dataset(cfg, tokenizer, None)
        rows = []
        for row in train:
            rows.append({k: v.tolist() for k, v in row.items()})
            if len(rows) == ROWS:
                break
        golden: dict = {"config": {**BASE, **extra}, "max_steps": steps}
        if cfg.sample_packing:
            pad = tokenizer.pad_token_id
            golden["windows"] = [w for r in rows for w in windows(r) if any(t != pad for t in w)]
            golden["bin_tokens"] = len(rows[0]["input_ids"])
        else:
            golden["rows"] = rows
        (HERE / "streaming" / f"{case}.json").write_text(json.dumps(golden) + "\n", encoding="utf-8")
        print(case, len(rows), "rows")


if __name__ == "__main__":
    main()
