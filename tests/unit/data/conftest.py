from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
TOK = str(ROOT / "templates" / "examples" / "tiny-llama")
BASE = {"base_model": TOK, "sequence_len": 256, "micro_batch_size": 1, "num_epochs": 1,
        "learning_rate": 0.001, "output_dir": "out", "datasets": [{"path": "unused.jsonl", "type": "alpaca"}]}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def make_cfg():  # noqa: ANN201
    from mudpuppy.launcher.config import load_config_text

    def build(**keys: Any) -> Any:
        return load_config_text(yaml.safe_dump({**BASE, **keys})).config

    return build


@pytest.fixture(scope="session")
def tokenizer():  # noqa: ANN201
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOK)
