"""``runtime.data.encode`` calls the tokenizers backend directly: its ids (and offsets) must be what the
tokenizer's own ``__call__`` returns, with and without truncation, on the shipped tiny Llama and every golden
tokenizer family, after calls that left truncation/padding set on the shared backend."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mudpuppy.launcher.config import load_config_text
from mudpuppy.runtime.data.encode import backend_of, encode_ids, encode_offsets
from mudpuppy.runtime.tokenizer import load_tokenizer
from tests.fixtures.tiny import EXAMPLES

pytestmark = pytest.mark.timeout(300)
GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden" / "tokenizers"
FOLDERS = [EXAMPLES / "tiny-llama", *sorted(p for p in GOLDEN.iterdir() if p.is_dir())]
TEXTS = ["Hello world", "<s> hi </s>", "  two  spaces\n\nnew", "ünïcödé 日本語 " * 9, "<|im_start|>user\nhi<|im_end|>",
         "x", " leading", "trailing ", "a much longer text that goes on " * 12, "\n", "</s>"]


def _tokenizer(folder: Path):  # noqa: ANN202
    cfg = load_config_text(yaml.safe_dump({"base_model": str(folder), "learning_rate": 1e-3,
                                            "datasets": [{"path": "d.jsonl", "type": "alpaca"}]})).config
    return load_tokenizer(cfg)


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_same_ids_and_offsets_as_call(folder: Path) -> None:
    tok = _tokenizer(folder)
    assert backend_of(tok) is not None, "the fast path should apply to these tokenizers"
    tok(["warm"] * 2, truncation=True, max_length=3, padding="max_length")  # leaves state on the backend
    for special in (True, False):
        want = tok(TEXTS, add_special_tokens=special)["input_ids"]
        assert encode_ids(tok, TEXTS, add_special_tokens=special) == want
        for limit in (1, 4, 17, 1024):
            want = tok(TEXTS, add_special_tokens=special, truncation=True, max_length=limit)["input_ids"]
            assert encode_ids(tok, TEXTS, add_special_tokens=special, max_length=limit) == want
    enc = tok(TEXTS, add_special_tokens=False, return_offsets_mapping=True)
    got = encode_offsets(tok, TEXTS)
    assert [ids for ids, _ in got] == enc["input_ids"]
    want = [[tuple(o) for o in x] for x in enc["offset_mapping"]]
    assert [list(offsets) for _, offsets in got] == want
    assert [offsets[-1] if len(offsets) else None for _, offsets in got] == [x[-1] if x else None for x in want]
    assert tok(TEXTS[:2])["input_ids"] == encode_ids(tok, TEXTS[:2])  # the plain call still works afterwards


def test_overridden_call_keeps_the_plain_path() -> None:
    tok = _tokenizer(EXAMPLES / "tiny-llama")
    base = type(tok)
    marked = type("Marked", (base,), {"_encode_plus": lambda self, *a, **k: base._encode_plus(self, *a, **k)})
    tok.__class__ = marked
    assert backend_of(tok) is None
    assert encode_ids(tok, TEXTS, max_length=5) == tok(TEXTS, truncation=True, max_length=5)["input_ids"]
