"""Template names: exactly Axolotl 0.19's (goldens in test_golden prove each shipped template renders as
Axolotl's does); names Axolotl rejects are rejected with a one-line error that lists the known ones."""

from __future__ import annotations

import pytest

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.data import chat_templates

pytestmark = pytest.mark.timeout(300)

# Axolotl 0.19's ChatTemplate enum plus phi_4 (a template file it ships without an enum entry).
AXOLOTL_NAMES = {
    "alpaca", "chatml", "mistral_v1", "mistral_v2v3", "mistral_v3_tekken", "mistral_v7_tekken", "gemma", "cohere",
    "llama3", "llama3_2_vision", "llama4", "phi_3", "phi_35", "phi_4", "deepseek_v2", "deepseek_v3", "jamba",
    "qwen_25", "qwen3", "qwen3_5", "falcon_h1", "nemotron_h", "exaone", "exaone4", "metharme", "pixtral", "llava",
    "qwen2_vl", "gemma3", "gemma3n", "gemma4", "gemma4_unified", "command_a", "command_a_tool_use",
    "command_a_rag", "aya",
}


def test_shipped_names_are_axolotl_names() -> None:
    shipped = set(chat_templates.shipped_templates())
    assert shipped <= AXOLOTL_NAMES, shipped - AXOLOTL_NAMES
    assert {"qwen_25", "qwen3", "phi_35", "phi_4", "gemma3", "cohere", "mistral_v1"} <= shipped


@pytest.mark.parametrize("name", ["qwen", "qwen2", "mistral", "phi3", "nonsense"])
def test_names_axolotl_rejects_are_rejected(name: str) -> None:
    with pytest.raises(UserError, match=f"unknown template {name!r}") as info:
        chat_templates.named_template(name)
    assert "qwen_25" in (info.value.hint or "")


def test_fallback_uses_named_template_without_tokenizer_template() -> None:
    class Tok:
        chat_template = None

    assert chat_templates.resolve("tokenizer_default_fallback_qwen3", None, Tok()) == \
        chat_templates.named_template("qwen3")
    Tok.chat_template = "{{ messages }}"
    assert chat_templates.resolve("tokenizer_default_fallback_qwen3", None, Tok()) == "{{ messages }}"


def test_jinja_without_text_is_an_error() -> None:
    with pytest.raises(UserError, match="chat_template_jinja"):
        chat_templates.resolve("jinja", None, None)
