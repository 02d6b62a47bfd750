"""load_tokenizer: special tokens/tokens as Axolotl adds them, pad fallback, chat template saved with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.tokenizer import load_tokenizer


def test_pad_falls_back_to_eos(make_cfg) -> None:  # noqa: ANN001
    tok = load_tokenizer(make_cfg())
    assert tok.pad_token == tok.eos_token == "</s>"


def test_special_tokens_and_tokens_are_added(make_cfg) -> None:  # noqa: ANN001
    tok = load_tokenizer(make_cfg(special_tokens={"pad_token": "<pad>", "additional_special_tokens": ["<x1>"]},
                                  tokens=["<tool>"]))
    assert tok.pad_token == "<pad>"
    assert len(tok.encode("<tool>", add_special_tokens=False)) == 1
    assert len(tok.encode("<x1>", add_special_tokens=False)) == 1
    assert "<x1>" in tok.all_special_tokens


def test_chat_template_is_saved_with_the_tokenizer(make_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    from transformers import AutoTokenizer

    tok = load_tokenizer(make_cfg(chat_template="chatml"))
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = again.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n"


def test_jinja_file_and_fallback(make_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    (tmp_path / "t.jinja").write_text("{% for message in messages %}[{{ message.content }}]{% endfor %}")
    tok = load_tokenizer(make_cfg(chat_template="jinja", chat_template_jinja=str(tmp_path / "t.jinja")))
    assert tok.apply_chat_template([{"role": "user", "content": "a"}], tokenize=False) == "[a]"
    tok = load_tokenizer(make_cfg(chat_template="tokenizer_default_fallback_llama3"))
    assert "<|start_header_id|>" in tok.chat_template


def test_bad_inputs_are_user_errors(make_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(UserError, match="unknown (chat )?template 'chatmlx'"):
        load_tokenizer(make_cfg(chat_template="chatmlx"))
    with pytest.raises(UserError, match="has no chat_template"):
        load_tokenizer(make_cfg(chat_template="tokenizer_default"))
    with pytest.raises(UserError, match="not a local folder"):
        load_tokenizer(make_cfg(base_model=str(tmp_path / "missing")))
