"""Batches of multimodal rows: images loaded, the processor renders and tokenizes, labels masked.

Axolotl's multimodal collator, step for step: each row's image parts become images (path, URL, base64, as
transformers' ``load_image`` reads them; images from an ``images`` column resized to ``image_size`` first), the
processor's ``apply_chat_template`` renders the conversations with the config's chat template, tokenizes them
with right padding and expands image placeholders into pixel tensors, and ``multimodal_labels`` masks everything
that does not train. Nothing is truncated to ``sequence_len``, as in Axolotl (each architecture expands image
tokens its own way). A media file that fails to load here (a URL that went away) is one line naming the row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.data.multimodal import ROW_COLUMN, WHERE_COLUMN, MediaPolicy
from mudpuppy.runtime.data.multimodal_labels import LabelRule
from mudpuppy.runtime.train.collator import REAL_TOKENS_KEY

URL_TIMEOUT_S = 30.0


@dataclass
class MultimodalCollator:
    processor: Any
    chat_template: str | None
    rule: LabelRule
    policy: MediaPolicy
    image_size: int | tuple[int, int] | None = None
    resample: str | None = None

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        from jinja2 import TemplateError

        conversations = [self.materialize(json.loads(r[ROW_COLUMN]), r.get(WHERE_COLUMN, "a row")) for r in rows]
        kwargs: dict[str, Any] = {}
        if self.chat_template is not None:
            kwargs["chat_template"] = self.chat_template
        try:
            batch = self.processor.apply_chat_template(
                conversations, add_generation_prompt=False, tokenize=True, return_tensors="pt", return_dict=True,
                processor_kwargs={"padding": True}, **kwargs)
        except (ValueError, TypeError, TemplateError) as exc:
            where = ", ".join(r.get(WHERE_COLUMN, "?") for r in rows)
            raise UserError(f"{where}: the processor could not render this batch: {str(exc).splitlines()[0]}") \
                from None
        out = dict(batch)
        out["labels"] = self.rule.labels(out["input_ids"])
        mask = out.get("attention_mask")
        real = mask.sum() if mask is not None else out["input_ids"].new_tensor(out["input_ids"].numel())
        out[REAL_TOKENS_KEY] = real
        return out

    def materialize(self, messages: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
        """Image parts -> ``{"type": "image", "image": PIL.Image}``; everything else as stored."""
        for message in messages:
            for index, part in enumerate(message["content"]):
                if part.get("type") == "image":
                    message["content"][index] = {"type": "image", "image": self.load(part, where)}
        return messages

    def load(self, part: dict[str, Any], where: str) -> Any:
        from transformers.image_utils import load_image

        source = part.get("path") or part.get("base64") or part.get("url")
        try:
            image = load_image(source, timeout=URL_TIMEOUT_S) if "url" in part else load_image(source)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 (network, decoder: any failure is this row's, said in one line)
            raise UserError(f"{where}: image {str(source)[:80]} could not be loaded: "
                            f"{(str(exc).splitlines() or [type(exc).__name__])[0]}") from None
        width, height = image.size
        if width * height > self.policy.max_pixels:  # a URL's image is only seen here
            raise UserError(f"{where}: image {str(source)[:80]} is {width}x{height} pixels, over max_image_pixels "
                            f"{self.policy.max_pixels:,}")
        if part.get("resize") and self.image_size is not None:
            image = resize(image, self.image_size, self.resample)
        return image


def resize(image: Any, size: int | tuple[int, int] | Sequence[int], algorithm: str | None) -> Any:
    """Axolotl's ``image_size``: [w, h] resizes exactly; N keeps the aspect ratio and pads to N x N with black."""
    from PIL import Image, ImageOps

    method = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}.get(
        (algorithm or "bilinear").lower(), Image.Resampling.BILINEAR)
    if isinstance(size, int):
        return ImageOps.pad(image, (size, size), method=method, color=(0, 0, 0))
    return image.resize(tuple(size), method)


def build_mm_collator(cfg: Any, processor: Any) -> MultimodalCollator:
    from mudpuppy.runtime.data.multimodal_labels import build_rule
    from mudpuppy.runtime.model.multimodal import chat_template_text

    return MultimodalCollator(
        processor=processor,
        chat_template=chat_template_text(cfg, processor),
        rule=build_rule(cfg, processor),
        policy=MediaPolicy.of(cfg, processor),
        image_size=cfg.image_size,
        resample=cfg.image_resize_algorithm,
    )
