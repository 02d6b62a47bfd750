"""``evaluate``: the eval loss (and perplexity) of the trained model on the config's eval data.

Uses the same data pipeline, collator and Trainer as training, so the number matches the eval_loss logged during
training. Falls back to the training split when the config has no eval data (and says so).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def evaluate(cfg: Any, *, lora_model_dir: str | None = None) -> dict[str, float]:
    from transformers import Trainer, TrainingArguments

    from mudpuppy.runtime.data import prepare_datasets
    from mudpuppy.runtime.inference import load_for_inference
    from mudpuppy.runtime.train.collator import REAL_TOKENS_KEY, build_collator

    model, tokenizer = load_for_inference(cfg, lora_model_dir=lora_model_dir)
    collator: Any
    if cfg.processor_type:  # message rows and the multimodal collator, as in training
        from mudpuppy.runtime.data import multimodal
        from mudpuppy.runtime.model.multimodal import load_processor
        from mudpuppy.runtime.train.mm_collator import build_mm_collator

        processor = load_processor(cfg, tokenizer)
        train_ds, eval_ds, _ = multimodal.build(cfg, processor)
        collator = build_mm_collator(cfg, processor)
    else:
        train_ds, eval_ds = prepare_datasets(cfg, tokenizer)
        collator = build_collator(cfg, tokenizer, evaluation=True)
    dataset = eval_ds if eval_ds is not None else train_ds

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collator(rows)
        batch.pop(REAL_TOKENS_KEY, None)
        return batch

    args = TrainingArguments(
        output_dir=str(Path(cfg.output_dir) / ".eval"), per_device_eval_batch_size=cfg.eval_batch_size or
        cfg.micro_batch_size or 1, report_to="none", disable_tqdm=True, remove_unused_columns=False,
        use_cpu=not _cuda(),
    )
    trainer = Trainer(model=model, args=args, eval_dataset=dataset, data_collator=collate)
    metrics = {k: float(v) for k, v in trainer.evaluate().items() if isinstance(v, (int, float))}
    if "eval_loss" in metrics:
        metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50.0))
    if eval_ds is None:
        metrics["measured_on_train_rows"] = 1.0  # the config has no eval data
    out = Path(cfg.output_dir)
    if out.is_dir():
        (out / "eval_metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())
