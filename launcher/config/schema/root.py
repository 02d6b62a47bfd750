"""``Config``: every area's section merged into Axolotl's flat key space, plus ``launch:``."""

from __future__ import annotations

from pydantic import Field

from mudpuppy.launcher.config.schema.adapter import AdapterSection
from mudpuppy.launcher.config.schema.datasets import DataSection
from mudpuppy.launcher.config.schema.distributed import DistributedSection
from mudpuppy.launcher.config.schema.kernels import KernelSection
from mudpuppy.launcher.config.schema.launch import LaunchSection
from mudpuppy.launcher.config.schema.logging import LoggingSection
from mudpuppy.launcher.config.schema.model import ModelSection
from mudpuppy.launcher.config.schema.multimodal import MultimodalSection
from mudpuppy.launcher.config.schema.rl import RLSection
from mudpuppy.launcher.config.schema.training import TrainingSection


class Config(
    ModelSection,
    DataSection,
    AdapterSection,
    TrainingSection,
    DistributedSection,
    LoggingSection,
    RLSection,
    KernelSection,
    MultimodalSection,
):
    """A whole run: an Axolotl config plus the ``launch:`` section."""

    launch: LaunchSection = Field(default_factory=LaunchSection)

    def resolved_model_type(self) -> str:
        """Reward models get a classification head and multimodal ones an image-text-to-text class unless the config
        names a class, as in Axolotl."""
        if not (self.model_type or self.type_of_model) and self.processor_type:
            return "AutoModelForImageTextToText"  # Axolotl's class for multimodal models it has no mapping for
        if self.model_type or self.type_of_model or not (self.reward_model or self.process_reward_model):
            return super().resolved_model_type()
        return "AutoModelForSequenceClassification" if self.reward_model else "AutoModelForTokenClassification"

    def resolved_num_labels(self) -> int | None:
        if self.num_labels is not None:
            return self.num_labels
        return 1 if self.reward_model else (2 if self.process_reward_model else None)

    def precision(self) -> str:
        """'bf16', 'fp16' or 'fp32' as asked; 'auto' is resolved by the runtime against the device."""
        if self.bf16 is True or self.bfloat16:
            return "bf16"
        if self.fp16 or self.float16:
            return "fp16"
        if self.bf16 == "auto":
            return "auto"
        return "fp32"
