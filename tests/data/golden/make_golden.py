"""Regenerate the golden rows with the Axolotl oracle. Run from the repo root with the Axolotl venv:

    AXOLOTL_DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 /work/axo-venv/bin/python tests/data/golden/make_golden.py

Each case is an Axolotl config slice; the expected train/eval rows Axolotl produces for it (same tokenizer,
same data) are written to tests/data/golden/<case>.json next to the config, which the test suite replays
through mudpuppy. Never imported by the tests.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
IN = "tests/data/golden/inputs"
TOK = "templates/examples/tiny-llama"
COMMON = {"base_model": TOK, "sequence_len": 256, "micro_batch_size": 1, "num_epochs": 1,
          "learning_rate": 0.001, "seed": 42}


def ds(path: str, type_: object, **extra: object) -> dict:
    return {"path": f"{IN}/{path}", "type": type_, **extra}


CHATML = {"chat_template": "chatml"}
SHAREGPT_AS = {"field_messages": "conversations", "message_property_mappings": {"role": "from", "content": "value"}}
INLINE_JINJA = ("{% for m in messages %}{{ '### ' + m['role'] | upper + ':\\n' + m['content'] + '\\n' }}"
                "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}")
CASES: dict[str, dict] = {
    "alpaca": {"datasets": [ds("alpaca.jsonl", "alpaca")]},
    "alpaca_train_on_inputs": {"datasets": [ds("alpaca.jsonl", "alpaca")], "train_on_inputs": True},
    "alpaca_style_chat": {"datasets": [ds("alpaca.jsonl", "alpaca:chat")]},
    "alpaca_style_chatml": {"datasets": [ds("alpaca.jsonl", "alpaca:chatml")]},
    "alpaca_chat": {"datasets": [ds("alpaca.jsonl", "alpaca_chat")]},
    "alpaca_chat_concise": {"datasets": [ds("alpaca.jsonl", "alpaca_chat.load_concise")]},
    "alpaca_chat_qa": {"datasets": [ds("qa.jsonl", "alpaca_chat.load_qa")]},
    "alpaca_instruct": {"datasets": [ds("alpaca.jsonl", "alpaca_instruct")]},
    "alpaca_w_system": {"datasets": [ds("alpaca_system.jsonl", "alpaca_w_system.load_instruct")]},
    "alpaca_w_system_chat": {"datasets": [ds("alpaca_system.jsonl", "alpaca_w_system")]},
    "user_defined": {"datasets": [ds("custom.jsonl", {
        "system_prompt": "Default system.", "system_format": "SYS: {system}\n", "field_system": "sys",
        "field_instruction": "q", "field_input": "ctx", "field_output": "a",
        "format": "Q: {instruction}\nC: {input}\nA: ", "no_input_format": "Q: {instruction}\nA: "})]},
    "completion": {"datasets": [ds("completion.jsonl", "completion")], "sequence_len": 64},
    "input_output": {"datasets": [ds("io.jsonl", "input_output")], "train_on_inputs": False},
    "chat_chatml": {**CHATML, "datasets": [ds("chat.jsonl", "chat_template")]},
    "chat_chatml_ds_level": {"datasets": [ds("chat.jsonl", "chat_template", chat_template="chatml")]},
    "chat_roles_to_train": {**CHATML, "datasets": [ds("chat.jsonl", "chat_template",
                                                       roles_to_train=["user", "assistant"])]},
    "chat_train_on_inputs": {**CHATML, "train_on_inputs": True, "datasets": [ds("chat.jsonl", "chat_template")]},
    "chat_eos_all": {**CHATML, "datasets": [ds("chat.jsonl", "chat_template", train_on_eos="all")]},
    "chat_eot_im_end": {**CHATML, "eot_tokens": ["<|im_end|>"],
                        "datasets": [ds("chat.jsonl", "chat_template", train_on_eot="turn")]},
    "chat_eot_last": {**CHATML, "eot_tokens": ["<|im_end|>"],
                      "datasets": [ds("chat.jsonl", "chat_template", train_on_eot="last")]},
    "chat_eot_all": {**CHATML, "eot_tokens": ["<|im_end|>"],
                     "datasets": [ds("chat.jsonl", "chat_template", train_on_eot="all")]},
    "chat_eot_none": {**CHATML, "eot_tokens": ["<|im_end|>"],
                      "datasets": [ds("chat.jsonl", "chat_template", train_on_eot="none")]},
    "chat_field_training": {**CHATML, "eot_tokens": ["<|im_end|>"], "datasets": [ds(
        "chat_training.jsonl", "chat_template", message_field_training="train",
        message_field_training_detail="detail")]},
    "chat_sharegpt_shape": {**CHATML, "datasets": [ds(
        "sharegpt.jsonl", "chat_template", field_messages="conversations",
        message_property_mappings={"role": "from", "content": "value"})]},
    "chat_roles_map": {**CHATML, "datasets": [ds(
        "sharegpt.jsonl", "chat_template", field_messages="conversations", message_field_role="from",
        message_field_content="value", roles={"user": ["human"], "assistant": ["gpt"]})]},
    "chat_drop_system": {**CHATML, "datasets": [ds("chat.jsonl", "chat_template", drop_system_message=True)]},
    "chat_system_field": {**CHATML, "datasets": [ds("chat_system_field.jsonl", "chat_template")]},
    "chat_llama3": {"datasets": [ds("chat.jsonl", "chat_template", chat_template="llama3")]},
    "chat_phi_3": {"datasets": [ds("chat.jsonl", "chat_template", chat_template="phi_3")]},
    "chat_gemma": {"datasets": [ds("chat_nosys.jsonl", "chat_template", chat_template="gemma")]},
    "chat_mistral": {"datasets": [ds("chat.jsonl", "chat_template", chat_template="mistral_v1")]},
    "chat_tools_jinja": {"datasets": [ds("tools.jsonl", "chat_template", chat_template="jinja",
                                         chat_template_jinja=f"{IN}/tools.jinja")]},
    "chat_qwen_25": {"chat_template": "qwen_25", "datasets": [ds("chat.jsonl", "chat_template")]},
    "chat_qwen_25_tools": {"sequence_len": 1024,
                           "datasets": [ds("tools.jsonl", "chat_template", chat_template="qwen_25")]},
    "chat_qwen3": {"chat_template": "qwen3", "datasets": [ds("chat_reasoning.jsonl", "chat_template")]},
    "chat_qwen3_tools": {"sequence_len": 1024,
                         "datasets": [ds("tools.jsonl", "chat_template", chat_template="qwen3")]},
    "chat_qwen3_think_inline": {"chat_template": "qwen3", "datasets": [ds("chat_think.jsonl", "chat_template")]},
    "chat_qwen3_split_thinking": {"chat_template": "qwen3", "datasets": [ds(
        "chat_think.jsonl", "chat_template", split_thinking=True)]},
    "chat_qwen3_eot": {"chat_template": "qwen3", "eot_tokens": ["<|im_end|>"], "datasets": [ds(
        "chat_reasoning.jsonl", "chat_template", train_on_eot="turn")]},
    "chat_qwen3_field_thinking": {"chat_template": "qwen3", "datasets": [ds(
        "chat_reasoning.jsonl", "chat_template", field_thinking="reasoning_content",
        template_thinking_key="reasoning_content", roles_to_train=["assistant", "user"])]},
    "chat_phi_35": {"chat_template": "phi_35", "datasets": [ds("chat.jsonl", "chat_template")]},
    "chat_phi_4": {"sequence_len": 1024, "datasets": [ds("chat.jsonl", "chat_template", chat_template="phi_4")]},
    "chat_gemma3": {"chat_template": "gemma3", "datasets": [ds("chat.jsonl", "chat_template")]},
    "chat_cohere": {"chat_template": "cohere", "datasets": [ds("chat.jsonl", "chat_template")]},
    "chat_fallback_to_named": {"chat_template": "tokenizer_default_fallback_qwen_25",
                               "datasets": [ds("chat.jsonl", "chat_template")]},
    "chat_fallback_prefers_tokenizer": {**CHATML, "datasets": [ds(
        "chat.jsonl", "chat_template", chat_template="tokenizer_default_fallback_qwen_25")]},
    "chat_jinja_inline": {"chat_template": "jinja", "chat_template_jinja": INLINE_JINJA,
                          "datasets": [ds("chat.jsonl", "chat_template")]},
    "chat_jinja_file_root": {"chat_template": "jinja", "chat_template_jinja": f"{IN}/tools.jinja",
                             "datasets": [ds("tools.jsonl", "chat_template")]},
    "chat_jinja_inline_ds": {"datasets": [ds("chat.jsonl", "chat_template", chat_template="jinja",
                                             chat_template_jinja=INLINE_JINJA)]},
    # Axolotl gives a chat_template entry without its own chat_template the tokenizer's template, so a
    # dataset-level chat_template_jinja alone is ignored there.
    "chat_jinja_ds_without_choice": {**CHATML, "datasets": [ds("chat.jsonl", "chat_template",
                                                             chat_template_jinja=INLINE_JINJA)]},
    "context_qa": {"datasets": [ds("context_qa.jsonl", "context_qa")]},
    "context_qa_404": {"datasets": [ds("context_qa.jsonl", "context_qa.load_404")]},
    "context_qa_v2": {"datasets": [ds("context_qa.jsonl", "context_qa.load_v2")]},
    "context_qa_train_on_inputs": {"train_on_inputs": True, "datasets": [ds("context_qa.jsonl", "context_qa")]},
    "orcamini": {"datasets": [ds("orca.jsonl", "orcamini")]},
    "open_orca": {"datasets": [ds("orca.jsonl", "alpaca_w_system.load_open_orca")]},
    "open_orca_chatml": {"datasets": [ds("orca.jsonl", "alpaca_w_system.load_open_orca_chatml")]},
    "metharme": {"datasets": [ds("metharme.jsonl", "metharme")]},
    "metharme_short": {"sequence_len": 24, "excess_length_strategy": "truncate",
                       "datasets": [ds("metharme.jsonl", "metharme")]},
    "pygmalion": {"datasets": [ds("pygmalion.jsonl", "pygmalion")]},
    "pygmalion_train_on_inputs": {"train_on_inputs": True, "datasets": [ds("pygmalion.jsonl", "pygmalion")]},
    "packing_alpaca": {"datasets": [ds("alpaca.jsonl", "alpaca")], "sample_packing": True, "val_set_size": 0.1},
    "packing_chat": {**CHATML, "sample_packing": True, "datasets": [ds("chat.jsonl", "chat_template")]},
    "merged_two": {**CHATML, "datasets": [ds("alpaca.jsonl", "alpaca"), ds("chat.jsonl", "chat_template")],
                   "val_set_size": 5},
    "merged_no_shuffle": {"datasets": [ds("alpaca.jsonl", "alpaca"), ds("qa.jsonl", "alpaca_chat.load_qa")],
                          "shuffle_merged_datasets": False},
    "excess_drop": {"datasets": [ds("alpaca.jsonl", "alpaca")], "sequence_len": 48},
    "excess_truncate": {"datasets": [ds("alpaca.jsonl", "alpaca")], "sequence_len": 48,
                        "excess_length_strategy": "truncate"},
    "test_datasets": {"datasets": [ds("alpaca.jsonl", "alpaca")], "test_datasets": [
        ds("qa.jsonl", "alpaca_chat.load_qa", split="train")]},
    "llama2_chat": {"datasets": [ds("llama2_chat.jsonl", "llama2_chat")]},
    "llama2_chat_train_on_inputs": {"train_on_inputs": True, "datasets": [ds("llama2_chat.jsonl", "llama2_chat")]},
    "stepwise": {"process_reward_model": True, "datasets": [ds("stepwise.jsonl", "stepwise_supervised")]},
    "stepwise_options": {"process_reward_model": True, "sequence_len": 40, "datasets": [ds(
        "stepwise.jsonl", "stepwise_supervised", step_separator=" | ", train_on_last_step_only=True,
        max_completion_length=24)]},
    # user strategy modules (tests/data/golden/inputs/user_strategies), imported from the inputs folder
    "user_module": {"datasets": [ds("shout.jsonl", "user_strategies.shout", field="question")]},
    "user_module_batched": {"datasets": [ds("shout.jsonl", "user_strategies.shout_batched")]},
    # Legacy sharegpt (removed from Axolotl): the oracle gets the config its migration guide
    # (docs/dataset-formats/conversation.qmd) rewrites it to; "_oracle" holds that rewrite.
    "sharegpt_conversation": {"datasets": [ds("sharegpt.jsonl", "sharegpt", conversation="chatml")],
                              "_oracle": {"datasets": [ds("sharegpt.jsonl", "chat_template", **SHAREGPT_AS,
                                                          chat_template="chatml")]}},
    "sharegpt_conversation_llama3": {"chat_template": "chatml", "datasets": [ds(
        "sharegpt.jsonl", "sharegpt", conversation="llama3")], "_oracle": {"datasets": [ds(
            "sharegpt.jsonl", "chat_template", **SHAREGPT_AS, chat_template="llama3")]}},
    "dataset_shard": {"datasets": [ds("alpaca.jsonl", "alpaca")], "dataset_shard_num": 3, "dataset_shard_idx": 1},
}
# Every named template Axolotl ships that the cases above do not cover, each rendered with a tiny tokenizer
# of its model family (tests/data/golden/tokenizers, built by make_tokenizers.py) so its markers are single
# special tokens and EOS is the family's. Templates the oracle release does not ship yet are given to it as
# chat_template: jinja with the same text (recorded under "oracle" in the golden).
TOKENIZERS = "tests/data/golden/tokenizers"
TEMPLATE_FAMILY = {
    "alpaca": None, "aya": "cohere", "command_a": "cohere", "command_a_rag": "cohere",
    "command_a_tool_use": "cohere", "deepseek_v2": "deepseek", "deepseek_v3": "deepseek", "exaone": "exaone",
    "exaone4": "exaone", "falcon_h1": "qwen", "gemma3n": "gemma3n", "gemma4": "gemma4", "gemma4_unified": "gemma4",
    "jamba": "jamba", "llama3_2_vision": "llama3", "llama4": "llama4", "llava": "llava", "metharme": "metharme",
    "mistral_v2v3": "mistral", "mistral_v3_tekken": "mistral", "mistral_v7_tekken": "mistral",
    "nemotron_h": "qwen", "pixtral": "mistral", "qwen2_vl": "qwen", "qwen3_5": "qwen",
}
# deepseek_v3 concatenates tool-call arguments as text, which Axolotl (and we) parse into a dict first; the
# mistral templates reject the placeholder turn Axolotl renders to find a tool-calling reply (Axolotl stops).
WITH_TOOLS = ("command_a", "command_a_tool_use", "exaone4", "falcon_h1", "gemma4", "jamba", "llama4", "qwen3_5")
for _name, _family in TEMPLATE_FAMILY.items():
    _tok = {"base_model": f"{TOKENIZERS}/tiny-{_family}"} if _family else {}
    CASES[f"tmpl_{_name}"] = {**_tok, "sequence_len": 4096,
                              "datasets": [ds("chat.jsonl", "chat_template", chat_template=_name)]}
    if _name in WITH_TOOLS:
        CASES[f"tmpl_{_name}_tools"] = {**_tok, "sequence_len": 4096,
                                        "datasets": [ds("tools.jsonl", "chat_template", chat_template=_name)]}
KEEP = ("input_ids", "attention_mask", "labels", "position_ids")


def rows(dataset: object) -> list[dict]:
    if dataset is None:
        return []
    cols = [c for c in KEEP if c in dataset.column_names]  # type: ignore[attr-defined]
    return [{c: list(r[c]) for c in cols} for r in dataset]  # type: ignore[attr-defined]


def _for_oracle(config: dict, oracle_names: set[str]) -> tuple[dict, str | None]:
    """A named template the oracle release lacks goes to it as chat_template: jinja with the shipped text."""
    datasets = []
    missing = []
    for entry in config.get("datasets", []):
        chosen = entry.get("chat_template")
        if chosen and chosen not in oracle_names and chosen != "jinja":
            missing.append(chosen)
            entry = {**entry, "chat_template": "jinja",
                     "chat_template_jinja": str(Path("templates/chat") / f"{chosen}.jinja")}
        datasets.append(entry)
    if not missing:
        return config, None
    note = (f"template(s) {', '.join(missing)} are not in this Axolotl release; the oracle was given the same text "
            "from Axolotl main as chat_template: jinja")
    return {**config, "datasets": datasets}, note


def main(names: list[str]) -> None:
    os.environ["AXOLOTL_IS_PREPROCESS"] = "1"
    from axolotl.loaders.tokenizer import load_tokenizer
    from axolotl.utils.chat_templates import base as templates_base
    from axolotl.utils.config import normalize_config, validate_config
    from axolotl.utils.data.sft import prepare_datasets
    from axolotl.utils.dict import DictDefault

    oracle_names = set(templates_base._CHAT_TEMPLATES)
    sys.path.insert(0, str(HERE / "inputs"))  # where the user_module cases' strategy package lives
    for name, case in CASES.items():
        if names and name not in names:
            continue
        config = {**COMMON, **{k: v for k, v in case.items() if k != "_oracle"}}
        oracle_config, note = _for_oracle(config, oracle_names)
        if "_oracle" in case:
            oracle_config = {**oracle_config, **case["_oracle"]}
            note = f"oracle given the migrated config: {json.dumps(case['_oracle'])}"
        with tempfile.TemporaryDirectory() as tmp:
            cfg = validate_config(DictDefault({**oracle_config, "dataset_prepared_path": tmp, "output_dir": tmp}))
            normalize_config(cfg)
            cfg.is_preprocess = True
            tokenizer = load_tokenizer(cfg)
            train, evaluation, _, _ = prepare_datasets(cfg, tokenizer)
        out = {"config": config, "train": rows(train), "eval": rows(evaluation)}
        if note:
            out["oracle"] = note
        (HERE / f"{name}.json").write_text(json.dumps(out, separators=(",", ":")) + "\n")
        print(f"{name}: {len(out['train'])} train, {len(out['eval'])} eval")


VARS_PROBES = {  # templates whose loop/assignment shapes differ; Axolotl's answer is pinned for each
    "for_msg": "{% for msg in messages %}{{ msg.content }}{{ msg.tool_calls }}{% endfor %}",
    "assigned": "{% set m = messages[0] %}{{ m['name'] }}{% for message in messages %}{{ message['content'] }}"
                "{% if message.weight is defined %}x{% endif %}{% endfor %}",
    "direct": "{{ messages[0]['content'] }}{% for message in messages %}{{ message.role }}{% endfor %}",
}


def template_vars() -> None:
    """Axolotl's answer to "which message fields does this template read" for every shipped template."""
    from axolotl.prompt_strategies.jinja_template_analyzer import JinjaTemplateAnalyzer

    root = HERE.parents[2]
    sources = {p.stem: p.read_text(encoding="utf-8") for p in sorted((root / "templates" / "chat").glob("*.jinja"))}
    sources.update(VARS_PROBES)
    out = {name: sorted(JinjaTemplateAnalyzer(text).get_message_vars("messages")) for name, text in sources.items()}
    text = json.dumps({"probes": VARS_PROBES, "vars": out}, indent=1) + "\n"
    (HERE / "analyzer" / "template_vars.json").write_text(text)
    print(f"template_vars: {len(out)} templates")


if __name__ == "__main__":
    if sys.argv[1:] == ["template_vars"]:
        template_vars()
    else:
        main(sys.argv[1:])
