"""Regenerate the preference golden rows with the Axolotl oracle. Run from the repo root with the Axolotl venv:

    AXOLOTL_DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 /work/axo-venv/bin/python tests/data/rl/make_golden.py [CASE ...]

Each case is an Axolotl config slice with ``rl:``; the train/eval rows Axolotl's preference pipeline produces
(the text columns TRL reads) are written to tests/data/rl/<case>.json next to the config. The test suite replays
the config through mudpuppy and compares; it never imports this file.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
IN = "tests/data/rl/inputs"
TOK = "templates/examples/tiny-llama"
COMMON = {"base_model": TOK, "sequence_len": 256, "micro_batch_size": 1, "num_epochs": 1,
          "learning_rate": 0.001, "seed": 42}
CHATML = {"chat_template": "chatml"}
KTO = {"rl": "kto", "remove_unused_columns": False}  # Axolotl insists on it for KTO
EBFT = {"rl": "ebft", "ebft": {"mode": "strided"}, "sequence_len": 48, "special_tokens": {"pad_token": "</s>"}}


def ds(path: str, type_: object, **extra: object) -> dict:
    return {"path": f"{IN}/{path}", "type": type_, "split": "train", **extra}


CASES: dict[str, dict] = {
    "dpo_chatml_intel": {"rl": "dpo", "datasets": [ds("intel.jsonl", "chatml.intel")]},
    "dpo_chatml_prompt_pairs": {"rl": "dpo", "datasets": [ds("prompt_pairs.jsonl", "chatml.prompt_pairs")]},
    "dpo_chatml_icr": {"rl": "dpo", "datasets": [ds("icr.jsonl", "chatml.icr")]},
    "dpo_chatml_default": {"rl": "dpo", "datasets": [ds("default_keys.jsonl", "chatml")]},
    "dpo_chatml_argilla_chat": {"rl": "dpo", "datasets": [ds("argilla_chat.jsonl", "chatml.argilla_chat")]},
    "dpo_chatml_ultra": {"rl": "dpo", "datasets": [ds("ultra.jsonl", "chatml.ultra")]},
    "dpo_llama3_intel": {"rl": "dpo", "datasets": [ds("intel.jsonl", "llama3.intel")]},
    "dpo_llama3_argilla_chat": {"rl": "dpo", "datasets": [ds("argilla_chat.jsonl", "llama3.argilla_chat")]},
    "dpo_llama3_ultra": {"rl": "dpo", "datasets": [ds("ultra.jsonl", "llama3.ultra")]},
    "ipo_llama3_prompt_pairs": {"rl": "ipo", "datasets": [ds("prompt_pairs.jsonl", "llama3.prompt_pairs")]},
    "dpo_chat_template": {**CHATML, "rl": "dpo", "datasets": [ds("chat_messages.jsonl", "chat_template.default")]},
    "dpo_chat_template_llama3": {"rl": "dpo", "chat_template": "llama3",
                                 "datasets": [ds("chat_messages.jsonl", "chat_template.default")]},
    "dpo_chat_template_argilla_chat": {**CHATML, "rl": "dpo", "datasets": [ds(
        "argilla_chat.jsonl", "chat_template.argilla_chat")]},
    "dpo_user_defined": {"rl": "dpo", "datasets": [ds("custom.jsonl", {
        "field_prompt": "q", "field_system": "sys", "field_chosen": "a_good", "field_rejected": "a_bad",
        "prompt_format": "[{system}] Q: {prompt}\nA:", "chosen_format": " {chosen}",
        "rejected_format": " {rejected}"})]},
    "simpo_chatml_intel": {"rl": "simpo", "datasets": [ds("intel.jsonl", "chatml.intel")]},
    "dpo_merged_val": {"rl": "dpo", "val_set_size": 0.2, "datasets": [
        ds("intel.jsonl", "chatml.intel"), ds("prompt_pairs.jsonl", "llama3.prompt_pairs")]},
    "dpo_no_shuffle": {"rl": "dpo", "shuffle_merged_datasets": False, "datasets": [
        ds("intel.jsonl", "chatml.intel"), ds("icr.jsonl", "chatml.icr")]},
    "dpo_excess_drop": {"rl": "dpo", "sequence_len": 48, "datasets": [ds("long.jsonl", "chatml.prompt_pairs")]},
    "dpo_excess_truncate": {"rl": "dpo", "sequence_len": 48, "excess_length_strategy": "truncate",
                            "datasets": [ds("long.jsonl", "chatml.prompt_pairs")]},
    "dpo_zephyr_nectar": {"rl": "dpo", "datasets": [ds("nectar.jsonl", "zephyr.nectar")]},
    "kto_chatml_argilla": {**KTO, "datasets": [ds("kto_argilla.jsonl", "chatml.argilla")]},
    "kto_chatml_intel": {**KTO, "datasets": [ds("kto_intel.jsonl", "chatml.intel")]},
    "kto_chatml_argilla_chat": {**KTO, "datasets": [ds("kto_argilla_chat.jsonl", "chatml.argilla_chat")]},
    "kto_llama3_argilla": {**KTO, "datasets": [ds("kto_argilla.jsonl", "llama3.argilla")]},
    "kto_llama3_argilla_chat": {**KTO, "datasets": [ds("kto_argilla_chat.jsonl", "llama3.argilla_chat")]},
    "kto_user_defined": {**KTO, "datasets": [ds("kto_custom.jsonl", {
        "field_prompt": "q", "field_system": "sys", "field_completion": "answer", "field_label": "ok",
        "prompt_format": "{system}: {prompt}", "completion_format": "{completion}!"})]},
    "orpo_chat_template_argilla": {**CHATML, "rl": "orpo",
                                   "datasets": [ds("orpo_argilla.jsonl", "chat_template.argilla")]},
    # rl: ebft, mode: strided: token rows (input_ids, attention_mask, labels[, prompt_length]) padded to sequence_len
    "ebft_strided_pretrain": {**EBFT, "datasets": [ds("ebft_text.jsonl", "ebft_pretrain.transform")]},
    "ebft_strided_pretrain_question": {**EBFT, "datasets": [ds("ebft_question.jsonl", "ebft_pretrain.transform")]},
    "ebft_strided_structured": {**EBFT, "datasets": [ds("ebft_structured.jsonl",
                                                        "ebft_strided_structured.transform")]},
    "ebft_strided_chat": {**EBFT, **CHATML, "datasets": [ds("ebft_chat.jsonl", "ebft_strided_chat.transform")]},
}
# Axolotl's config validation drops these dataset keys for rl datasets (its DPODataset schema lacks them), so
# the oracle's strategy function is called directly on the raw config, rows in file order.
DIRECT: dict[str, dict] = {
    "dpo_chat_template_mapped": {**CHATML, "rl": "dpo", "shuffle_merged_datasets": False, "datasets": [ds(
        "chat_mapped.jsonl", "chat_template.default", field_messages="conversation", field_chosen="good",
        field_rejected="bad", message_property_mappings={"role": "from", "content": "value"},
        roles={"user": ["human"], "assistant": ["gpt"]})]},
}
# Reward-model datasets (bradley_terry.*) go through Axolotl's SFT pipeline, which tokenizes them itself.
SFT_PATH: dict[str, dict] = {
    "bt_chat_template": {**CHATML, "reward_model": True, "num_labels": 1,
                         "datasets": [ds("bt.jsonl", "bradley_terry.chat_template")]},
    "bt_chat_template_llama3_short": {"reward_model": True, "num_labels": 1, "sequence_len": 64,
                                      "datasets": [ds("bt.jsonl", "bradley_terry.chat_template",
                                                      chat_template="llama3")]},
}
KEEP = ("prompt", "chosen", "rejected", "completion", "label", "chosen_ids", "rejected_ids", "input_ids",
        "attention_mask", "labels", "prompt_length")


def rows(dataset: object) -> list[dict]:
    if dataset is None:
        return []
    cols = [c for c in KEEP if c in dataset.column_names]  # type: ignore[attr-defined]
    return [{c: r[c] for c in cols} for r in dataset]  # type: ignore[attr-defined]


def main(names: list[str]) -> None:
    os.environ["AXOLOTL_IS_PREPROCESS"] = "1"
    from axolotl.loaders.tokenizer import load_tokenizer
    from axolotl.utils.config import normalize_config, validate_config
    from axolotl.utils.data.rl import prepare_preference_datasets
    from axolotl.utils.dict import DictDefault

    for name, case in CASES.items():
        if names and name not in names:
            continue
        config = {**COMMON, **case}
        with tempfile.TemporaryDirectory() as tmp:
            cfg = validate_config(DictDefault({**config, "dataset_prepared_path": tmp, "output_dir": tmp}))
            normalize_config(cfg)
            cfg.is_preprocess = True
            tokenizer = load_tokenizer(cfg)
            train, evaluation = prepare_preference_datasets(cfg, tokenizer)
        out = {"config": config, "train": rows(train), "eval": rows(evaluation)}
        (HERE / f"{name}.json").write_text(json.dumps(out, indent=None, separators=(",", ":")) + "\n")
        print(f"{name}: {len(out['train'])} train, {len(out['eval'])} eval")
    for name, case in SFT_PATH.items():
        if names and name not in names:
            continue
        from axolotl.utils.data.sft import prepare_datasets

        config = {**COMMON, **case}
        with tempfile.TemporaryDirectory() as tmp:
            cfg = validate_config(DictDefault({**config, "dataset_prepared_path": tmp, "output_dir": tmp}))
            normalize_config(cfg)
            cfg.is_preprocess = True
            tokenizer = load_tokenizer(cfg)
            train, evaluation, _, _ = prepare_datasets(cfg, tokenizer)
        out = {"config": config, "train": rows(train), "eval": rows(evaluation)}
        (HERE / f"{name}.json").write_text(json.dumps(out, separators=(",", ":")) + "\n")
        print(f"{name}: {len(out['train'])} train, {len(out['eval'])} eval (sft path)")
    for name, config in DIRECT.items():
        if names and name not in names:
            continue
        config = {**COMMON, **config}
        base = {k: v for k, v in config.items() if k not in ("datasets", "rl")}
        with tempfile.TemporaryDirectory() as tmp:
            tok_cfg = validate_config(DictDefault({**base, "datasets": [{"path": "x", "type": "alpaca"}],
                                                   "dataset_prepared_path": tmp, "output_dir": tmp}))
            normalize_config(tok_cfg)
            tokenizer = load_tokenizer(tok_cfg)
        from axolotl.prompt_strategies.dpo import load as load_dpo

        entry = config["datasets"][0]
        made = load_dpo(entry["type"], DictDefault(config), dataset_idx=0)
        transform = made[0] if isinstance(made, tuple) else made
        lines = (Path(entry["path"]).read_text().splitlines())
        train = [transform(json.loads(line), tokenizer=tokenizer) for line in lines if line.strip()]
        out = {"config": config, "train": [{k: r[k] for k in KEEP if k in r} for r in train], "eval": []}
        (HERE / f"{name}.json").write_text(json.dumps(out, separators=(",", ":")) + "\n")
        print(f"{name}: {len(out['train'])} train (direct)")


if __name__ == "__main__":
    main(sys.argv[1:])
