"""Build the tiny per-family tokenizers the chat-template goldens use (run once with the project venv):

    /work/main/.venv/bin/python tests/data/golden/make_tokenizers.py

Each family is the example tiny-llama BPE with that model family's special tokens added as single special
tokens and its own BOS/EOS, so a template's markers tokenize as one id each and EOS/EOT masking sees the right
token, as they would with the real tokenizer. The folder name carries the family (Axolotl and mudpuppy both
treat a tokenizer whose name contains "mistral" specially). The outputs are committed; never imported by tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BASE = ROOT / "templates" / "examples" / "tiny-llama"
OUT = Path(__file__).resolve().parent / "tokenizers"

COHERE = ["<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>",
          "<|SYSTEM_TOKEN|>", "<|START_THINKING|>", "<|END_THINKING|>", "<|START_ACTION|>", "<|END_ACTION|>",
          "<|START_RESPONSE|>", "<|END_RESPONSE|>", "<|START_TOOL_RESULT|>", "<|END_TOOL_RESULT|>"]
DEEPSEEK = ["<｜User｜>", "<｜Assistant｜>", "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>",
            "<｜tool▁call▁end｜>", "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>",
            "<｜tool▁output▁end｜>", "<｜tool▁sep｜>"]
MISTRAL = ["[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_CALLS]", "[TOOL_RESULTS]",
           "[/TOOL_RESULTS]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]"]
QWEN = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<think>", "</think>",
        "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
# family -> (bos, eos, extra special tokens)
FAMILIES: dict[str, tuple[str | None, str, list[str]]] = {
    "tiny-cohere": ("<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>", COHERE),
    "tiny-deepseek": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", DEEPSEEK),
    "tiny-exaone": ("[BOS]", "[|endofturn|]", ["[|system|]", "[|user|]", "[|assistant|]", "[|tool|]", "<think>",
                                               "</think>", "<tool_call>", "</tool_call>"]),
    "tiny-qwen": (None, "<|im_end|>", QWEN),
    "tiny-gemma3n": ("<bos>", "<end_of_turn>", ["<start_of_turn>", "<image_soft_token>", "<audio_soft_token>"]),
    "tiny-gemma4": ("<bos>", "<turn|>", ["<|turn>", "<|think|>", "<|channel>", "<channel|>", "<|tool>", "<tool|>",
                                        "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>",
                                        "<|image|>", "<|audio|>", "<|video|>"]),
    "tiny-jamba": ("<|startoftext|>", "<|eom|>", ["<|bom|>"]),
    "tiny-llama3": ("<|begin_of_text|>", "<|eot_id|>", ["<|start_header_id|>", "<|end_header_id|>", "<|image|>"]),
    "tiny-llama4": ("<|begin_of_text|>", "<|eot|>", ["<|header_start|>", "<|header_end|>", "<|image|>",
                                                     "<|python_start|>", "<|python_end|>"]),
    "tiny-mistral": ("<s>", "</s>", MISTRAL),
    "tiny-metharme": ("<s>", "</s>", ["<|system|>", "<|user|>", "<|model|>"]),
    "tiny-llava": ("<s>", "</s>", ["<image>"]),
}


def main() -> None:
    from transformers import AutoTokenizer

    for name, (bos, eos, extra) in FAMILIES.items():
        tok = AutoTokenizer.from_pretrained(BASE)
        specials: dict[str, object] = {"eos_token": eos, "additional_special_tokens": extra}
        if bos is not None:
            specials["bos_token"] = bos
        tok.add_special_tokens(specials)
        target = OUT / name
        shutil.rmtree(target, ignore_errors=True)
        tok.save_pretrained(target)
        shutil.copy(BASE / "config.json", target / "config.json")
        _portable(target, tok.convert_tokens_to_ids(bos) if bos is not None else None, bos, eos, extra)
        print(name, len(tok))


def _portable(target: Path, bos_id: int | None, bos: str | None, eos: str, extra: list[str]) -> None:
    """Rewrite the saved files in the classic PreTrainedTokenizerFast layout (readable by the oracle's older
    transformers too) and make the post-processor prepend the family's BOS (none for Qwen, as its tokenizer)."""
    path = target / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    steps = data["post_processor"]["processors"]
    steps[:] = [s for s in steps if s["type"] != "TemplateProcessing"]
    if bos is not None:
        special = {"SpecialToken": {"id": bos, "type_id": 0}}
        seq = {"Sequence": {"id": "A", "type_id": 0}}
        steps.append({"type": "TemplateProcessing", "single": [special, seq],
                      "pair": [special, seq, special, {"Sequence": {"id": "B", "type_id": 0}}],
                      "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}})
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    specials: dict[str, object] = {"eos_token": eos, "unk_token": "<unk>", "additional_special_tokens": extra}
    if bos is not None:
        specials["bos_token"] = bos
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 2048,
              "clean_up_tokenization_spaces": False, "add_bos_token": bos is not None, "add_eos_token": False,
              **specials}
    (target / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n",
                                                  encoding="utf-8")
    (target / "special_tokens_map.json").write_text(json.dumps(specials, ensure_ascii=False, indent=2) + "\n",
                                                    encoding="utf-8")


if __name__ == "__main__":
    main()
