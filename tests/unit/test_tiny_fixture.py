"""The shipped tiny model folder is exactly what the fixture builder makes from the shipped text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.tiny import EXAMPLES, build_tiny_model_dir

pytestmark = pytest.mark.timeout(300)


def test_shipped_tiny_llama_is_reproducible(tmp_path: Path) -> None:
    built = build_tiny_model_dir(tmp_path / "tiny")
    shipped = EXAMPLES / "tiny-llama"
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
        assert json.loads((built / name).read_text()) == json.loads((shipped / name).read_text()), name


def test_tiny_tokenizer_behaves_like_a_llama_tokenizer() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(EXAMPLES / "tiny-llama")
    ids = tok("Add 3 and 5.")["input_ids"]
    assert ids[0] == tok.bos_token_id == 1
    assert tok.eos_token_id == 2
    assert tok.decode(ids, skip_special_tokens=True) == "Add 3 and 5."
    assert tok.convert_tokens_to_ids("<|im_end|>") == 5
