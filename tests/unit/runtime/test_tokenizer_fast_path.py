"""``load_tokenizer`` builds a folder whose tokenizer_config.json names ``PreTrainedTokenizerFast`` directly,
without AutoTokenizer (which imports torch to load the model config): the result must be the tokenizer
AutoTokenizer builds, with every Axolotl addition on top. Checked on the shipped tiny Llama and on each of the
golden tokenizer families (whose rows were made by Axolotl through AutoTokenizer)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mudpuppy.launcher.config import load_config_text
from mudpuppy.runtime import tokenizer as tok
from tests.fixtures.tiny import EXAMPLES

pytestmark = pytest.mark.timeout(300)
GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden" / "tokenizers"
FOLDERS = [EXAMPLES / "tiny-llama", *sorted(p for p in GOLDEN.iterdir() if p.is_dir())]
TEXTS = ["Hello world", "<s> hi </s>", "  two  spaces\n\nnew", "ünïcödé 日本語", "<|im_start|>user\nhi<|im_end|>"]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello there"}]


def _cfg(folder: Path, **keys: object):  # noqa: ANN202
    return load_config_text(yaml.safe_dump({
        "base_model": str(folder), "learning_rate": 1e-3, "chat_template": "chatml", "tokens": ["<extra_a>"],
        "special_tokens": {"pad_token": "<pad_x>"}, "datasets": [{"path": "d.jsonl", "type": "alpaca"}],
        **keys})).config


def _view(t) -> dict:  # noqa: ANN001
    return {"class": type(t).__name__, "vocab": t.get_vocab(), "len": len(t),
            "special": [t.bos_token, t.eos_token, t.pad_token, t.unk_token, t.all_special_tokens],
            "max": t.model_max_length, "sides": [t.padding_side, t.truncation_side],
            "ids": [t(x)["input_ids"] for x in TEXTS], "decoded": [t.decode(t(x)["input_ids"]) for x in TEXTS],
            "chat": t.apply_chat_template(CHAT, tokenize=False), "template": t.chat_template}


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_direct_load_equals_autotokenizer(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] in tok._PLAIN_FAST
    direct = tok.load_tokenizer(_cfg(folder))
    monkeypatch.setattr(tok, "_plain_fast_class", lambda source, cfg: False)  # the AutoTokenizer path
    assert _view(direct) == _view(tok.load_tokenizer(_cfg(folder)))


def test_other_classes_and_remote_code_still_go_through_autotokenizer(tmp_path: Path) -> None:
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer.json").write_text((EXAMPLES / "tiny-llama" / "tokenizer.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    assert not tok._plain_fast_class(str(folder), _cfg(folder))
    tiny = EXAMPLES / "tiny-llama"
    assert tok._plain_fast_class(str(tiny), _cfg(tiny))
    assert not tok._plain_fast_class(str(tiny), _cfg(tiny, trust_remote_code=True))
    assert not tok._plain_fast_class(str(tiny), _cfg(tiny, tokenizer_use_fast=False))


def test_loading_such_a_tokenizer_does_not_import_torch() -> None:
    code = ("import sys, yaml\nfrom mudpuppy.launcher.config import load_config_text\n"
            "from mudpuppy.runtime.tokenizer import load_tokenizer\n"
            f"cfg = load_config_text(yaml.safe_dump({{'base_model': {str(EXAMPLES / 'tiny-llama')!r}, "
            "'learning_rate': 1e-3, 'chat_template': 'chatml', "
            "'datasets': [{'path': 'd.jsonl', 'type': 'alpaca'}]})).config\n"
            "load_tokenizer(cfg)\nprint('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
