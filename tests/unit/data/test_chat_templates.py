"""Template names: exactly Axolotl's 36 (goldens in test_golden prove each shipped template renders as
Axolotl's does); names Axolotl rejects are rejected with a one-line error that lists the known ones."""

from __future__ import annotations

import pytest

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.data import chat_templates

pytestmark = pytest.mark.timeout(60)

# Axolotl's template files (0.19 and current main ship the same 36 names).
AXOLOTL_NAMES = {
    "alpaca", "chatml", "mistral_v1", "mistral_v2v3", "mistral_v3_tekken", "mistral_v7_tekken", "gemma", "cohere",
    "llama3", "llama3_2_vision", "llama4", "phi_3", "phi_35", "phi_4", "deepseek_v2", "deepseek_v3", "jamba",
    "qwen_25", "qwen3", "qwen3_5", "falcon_h1", "nemotron_h", "exaone", "exaone4", "metharme", "pixtral", "llava",
    "qwen2_vl", "gemma3", "gemma3n", "gemma4", "gemma4_unified", "command_a", "command_a_tool_use",
    "command_a_rag", "aya",
}


def test_every_axolotl_template_ships() -> None:
    assert set(chat_templates.shipped_templates()) == AXOLOTL_NAMES


def test_every_template_has_an_oracle_golden() -> None:
    """Each named template renders some golden case of test_golden (made by the Axolotl oracle)."""
    import json
    from pathlib import Path

    golden = Path(__file__).resolve().parents[2] / "data" / "golden"
    used: set[str] = set()
    for path in golden.glob("*.json"):
        config = json.loads(path.read_text())["config"]
        used |= {c for c in [config.get("chat_template"), *(d.get("chat_template") for d in config["datasets"])]
                 if isinstance(c, str)}
        used |= {c.removeprefix("tokenizer_default_fallback_") for c in used}
    assert used >= AXOLOTL_NAMES, sorted(AXOLOTL_NAMES - used)


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


def test_message_fields_are_the_ones_axolotl_passes() -> None:
    """Axolotl's template analyzer (its answers pinned by make_golden.py template_vars) decides which message
    fields reach the template; ours must agree for every shipped template and for loop/assignment shapes."""
    import json
    from pathlib import Path

    from mudpuppy.runtime.data.template_vars import message_vars

    pinned = json.loads((Path(__file__).resolve().parents[2] / "data" / "golden" / "analyzer" /
                         "template_vars.json").read_text())
    for name, expected in pinned["vars"].items():
        text = pinned["probes"].get(name) or chat_templates.named_template(name)
        assert sorted(message_vars(text)) == expected, name
    assert len(pinned["vars"]) == len(chat_templates.shipped_templates()) + len(pinned["probes"])


def test_legacy_sharegpt_conversation_must_name_a_template() -> None:
    """conversation: with type: sharegpt names a chat template (Axolotl's migration); a FastChat style name that
    is not one is a one-line error listing the names."""
    from types import SimpleNamespace

    from mudpuppy.runtime.data.strategies import legacy_conversation

    assert legacy_conversation(SimpleNamespace(path="d.jsonl", conversation="llama3")) == "llama3"
    with pytest.raises(UserError, match="conversation: 'vicuna_v1.1' is not a chat template name") as info:
        legacy_conversation(SimpleNamespace(path="d.jsonl", conversation="vicuna_v1.1"))
    assert "chatml" in (info.value.hint or "")


def test_bradley_terry_outside_a_reward_model_says_what_to_set() -> None:
    from types import SimpleNamespace

    from mudpuppy.runtime.data.strategies import build_strategy

    cfg = SimpleNamespace(train_on_inputs=False, sequence_len=64)
    ds = SimpleNamespace(type="bradley_terry.chat_template", path="pairs.jsonl", conversation=None)
    with pytest.raises(UserError, match="unknown type 'bradley_terry.chat_template'") as info:
        build_strategy(cfg, ds, None)
    assert "reward_model: true" in (info.value.hint or "")
