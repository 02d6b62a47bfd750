"""``tokenizer_save_jinja_files: false`` (Axolotl's key): the final tokenizer keeps its chat template inside
tokenizer_config.json instead of a chat_template.jinja file; transformers loads the same template back."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from mudpuppy.launcher.config import load_config_text
from mudpuppy.runtime.output import save_final
from tests.fixtures.tiny import EXAMPLES

pytestmark = pytest.mark.timeout(120)
TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"


class _Trainer:
    """What save_final uses of a Trainer: args.should_save, save_model (weights + tokenizer), processing_class."""

    def __init__(self, tokenizer) -> None:  # noqa: ANN001
        self.args = SimpleNamespace(should_save=True)
        self.processing_class = tokenizer

    def save_model(self, folder: str) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.processing_class.save_pretrained(folder)  # what transformers' Trainer.save_model does


@pytest.mark.parametrize("jinja_files", [True, False])
def test_chat_template_file_follows_the_key(tmp_path: Path, jinja_files: bool) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(EXAMPLES / "tiny-llama"))
    tokenizer.chat_template = TEMPLATE
    cfg = load_config_text(yaml.safe_dump({
        "base_model": "m", "learning_rate": 1e-3, "tokenizer_save_jinja_files": jinja_files,
        "datasets": [{"path": "d.jsonl", "type": "alpaca"}]})).config
    out = tmp_path / "out"
    out.mkdir()
    save_final(_Trainer(tokenizer), cfg, out)
    assert (out / "chat_template.jinja").exists() is jinja_files
    assert ("chat_template" in (out / "tokenizer_config.json").read_text()) is not jinja_files
    assert AutoTokenizer.from_pretrained(str(out)).chat_template == TEMPLATE
