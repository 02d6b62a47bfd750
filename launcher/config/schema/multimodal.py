"""Vision(-audio)-language keys: Axolotl's processor and image settings plus two of mudpuppy's own.

``processor_type`` switches a run onto the multimodal path (as in Axolotl, whose multimodal collator is used
exactly when it is set): rows keep their OpenAI-style content parts, images are loaded and turned into pixel
tensors by the model's processor in the collator, and the model loads as an image-text-to-text class.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mudpuppy.launcher.config.schema.base import Section

DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
"""Images with more pixels than this (width x height) are refused: decoding one would take gigabytes of RAM."""


class MultimodalSection(Section):
    processor_type: str | None = Field(
        None, description="transformers processor class (AutoProcessor, VoxtralProcessor, ...): multimodal rows."
    )
    processor_kwargs: dict[str, object] | None = Field(
        None, description="Extra keyword arguments for the processor's from_pretrained."
    )
    image_size: int | tuple[int, int] | None = Field(
        None, description="Resize images of an `images`/`image` column: N pads to an N x N square keeping the "
                          "aspect ratio, [width, height] resizes exactly (Axolotl's rule)."
    )
    image_resize_algorithm: Literal["bilinear", "bicubic", "lanczos"] | None = Field(
        None, description="Resampling for image_size (default bilinear)."
    )
    freeze_mm_modules: bool | None = Field(
        None, description="Freeze vision/audio towers and projectors (a LoRA trains only its adapters anyway)."
    )
    allow_remote_images: bool | None = Field(
        False, description="(mudpuppy) Fetch http(s) image URLs of the dataset at training time; off by default, "
                           "so a run never reaches the network unless the config says so."
    )
    max_image_pixels: int | None = Field(
        DEFAULT_MAX_IMAGE_PIXELS, gt=0,
        description="(mudpuppy) Largest image (width x height) a dataset row may reference.",
    )
