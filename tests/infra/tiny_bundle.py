"""The shipped tiny example as a small, fast config (absolute paths, few steps) and its bundle, for backend tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mudpuppy.launcher.bundle import Bundle, build_bundle
from mudpuppy.launcher.config import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "templates" / "examples"


def tiny_config(folder: Path, launch: dict[str, Any] | None = None, **keys: Any) -> Path:
    cfg = yaml.safe_load((EXAMPLES / "tiny-alpaca.yml").read_text())
    cfg.update({
        "base_model": str(EXAMPLES / "tiny-llama"),
        "datasets": [{"path": str(EXAMPLES / "data" / "alpaca_tiny.jsonl"), "type": "alpaca"}],
        "val_set_size": 0, "sequence_len": 128, "micro_batch_size": 2, "gradient_accumulation_steps": 1,
        "max_steps": 4, "save_steps": 2, "logging_steps": 1, "warmup_steps": 0,
    })
    cfg.update(keys)
    if launch is not None:
        cfg["launch"] = launch
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tiny_bundle(folder: Path, launch: dict[str, Any] | None = None, *, wheel: Path | None = None,
                **keys: Any) -> tuple[Any, Bundle]:
    """(Config, Bundle) for the tiny example; no mudpuppy wheel unless given (building one takes seconds)."""
    config = load_config(tiny_config(folder, launch, **keys)).config
    return config, build_bundle(config, folder / "bundles", wheel=wheel)
