"""The finished run's folder: HF-format model or adapter, tokenizer (with chat template), and a model card.

Written into ``output_dir/.staging/final`` and moved into ``output_dir`` file by file only when complete, so a run
killed while saving never leaves a half-written ``adapter_model.safetensors`` next to an older card.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

CARD_NAME = "README.md"


def save_final(trainer: Any, cfg: Any, output_dir: Path, metrics: dict[str, Any] | None = None) -> Path:
    from mudpuppy.runtime.checkpoints.atomic import staging_root

    staged = staging_root(output_dir) / "final"
    if trainer.args.should_save:
        shutil.rmtree(staged, ignore_errors=True)
    trainer.save_model(str(staged))
    tokenizer = getattr(trainer, "processing_class", None)
    if trainer.args.should_save and cfg.tokenizer_save_jinja_files is False and tokenizer is not None:
        # Axolotl's switch: the chat template goes inside tokenizer_config.json, no chat_template.jinja file
        (staged / "chat_template.jinja").unlink(missing_ok=True)
        tokenizer.save_pretrained(str(staged), save_jinja_files=False)
    if trainer.args.should_save:
        (staged / CARD_NAME).write_text(model_card(cfg, metrics or {}))
        for item in sorted(staged.iterdir()):
            target = output_dir / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(item, target)
        shutil.rmtree(staged, ignore_errors=True)
    return output_dir


def model_card(cfg: Any, metrics: dict[str, Any]) -> str:
    import yaml

    config = cfg.model_dump(mode="json", exclude_none=True, exclude={"launch"})
    kind = f"a {cfg.adapter.upper()} adapter for" if cfg.adapter else "a full fine-tune of"
    datasets = ", ".join(f"`{d.path}`" for d in (cfg.datasets or [])) or "(none listed)"
    lines = [
        "---",
        yaml.safe_dump({"base_model": cfg.base_model, "library_name": "peft" if cfg.adapter else "transformers",
                        "tags": ["mudpuppy", "generated_from_trainer"]}, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {Path(cfg.output_dir).name}",
        "",
        f"This is {kind} `{cfg.base_model}`, trained with mudpuppy on {datasets}.",
        "",
    ]
    if metrics:
        lines += ["## Results", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                  for k, v in sorted(metrics.items())]
        lines.append("")
    lines += ["## Training config", "", "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)
