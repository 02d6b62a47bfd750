"""The model side of multimodal runs: the processor, the chat template it renders with, frozen media towers.

- ``load_processor``: ``processor_type`` (AutoProcessor, VoxtralProcessor, ...) from the model folder with
  ``processor_kwargs``, its tokenizer replaced by the one ``load_tokenizer`` built (added tokens, pad token and
  chat template included), as Axolotl does;
- ``freeze_media``: vision/audio towers and their projectors stop training. mudpuppy does this by default on
  the multimodal path (``freeze_mm_modules`` unset); ``freeze_mm_modules: false`` trains them (full fine-tunes);
- ``lora_targets``: with ``lora_target_linear`` the adapter goes on the language model's linear layers only
  while the towers are frozen (a LoRA on a frozen tower would never train).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from mudpuppy.launcher.errors import UserError

log = logging.getLogger("mudpuppy.runtime.model")

# module names (one component of a parameter path) that belong to media encoders, not the language model
MEDIA_MODULES = ("vision_tower", "vision_model", "vision_encoder", "embed_vision", "multi_modal_projector",
                 "visual", "audio_tower", "audio_model", "embed_audio")


def freezes_media(cfg: Any) -> bool:
    return bool(cfg.processor_type) and cfg.freeze_mm_modules is not False or bool(cfg.freeze_mm_modules)


def load_processor(cfg: Any, tokenizer: Any) -> Any:
    import transformers

    name = cfg.processor_type or "AutoProcessor"
    cls = getattr(transformers, name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise UserError(f"processor_type: transformers has no processor class {name!r}",
                        hint="use AutoProcessor")
    source = cfg.base_model_config or cfg.base_model
    kwargs: dict[str, Any] = {"trust_remote_code": bool(cfg.trust_remote_code)}
    if cfg.revision_of_model:
        kwargs["revision"] = cfg.revision_of_model
    kwargs.update(cfg.processor_kwargs or {})
    try:
        try:
            processor = cls.from_pretrained(source, **kwargs)
        except (ImportError, OSError) as exc:  # Qwen-VL processors on a machine without torchvision (see below)
            processor = _without_video_processor(source, kwargs, exc)
    except (OSError, ValueError, ImportError) as exc:
        raise UserError(f"processor_type: could not load a {name} from {source!r}: "
                        f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0]}") from None
    if not hasattr(processor, "tokenizer"):
        raise UserError(f"processor_type: {name} from {source!r} is a {type(processor).__name__}, which has no "
                        "tokenizer; multimodal chat needs a processor (image processor + tokenizer)")
    processor.tokenizer = tokenizer
    return processor


def _without_video_processor(source: str, kwargs: dict[str, Any], error: ImportError) -> Any:
    """The processor for image-only training when only its video processor is missing a dependency.

    transformers 5 gives Qwen2-VL-style processors a video processor that needs torchvision and refuses to build
    one without it, even though images never touch it; torchvision has no CPU wheel for every torch. When that
    is the only obstacle, the processor is built from its image processor and tokenizer with no video processor
    (the constructor's type check of that one argument is relaxed for this call only). Anything else re-raises.
    """
    import json
    from pathlib import Path

    import transformers
    from transformers.processing_utils import ProcessorMixin

    config = Path(source) / "processor_config.json"
    name = json.loads(config.read_text()).get("processor_class") if config.is_file() else None
    cls = getattr(transformers, str(name), None)
    from transformers.utils import is_torchvision_available

    if is_torchvision_available() or cls is None or "video_processor" not in getattr(
            cls, "get_attributes", lambda: [])():
        raise error
    image_processor = transformers.AutoImageProcessor.from_pretrained(source, **kwargs)
    tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
    template = Path(source) / "chat_template.jinja"
    check = ProcessorMixin.check_argument_for_proper_class

    def allow_no_video(self: Any, attribute: str, value: Any) -> Any:
        return None if attribute == "video_processor" and value is None else check(self, attribute, value)

    ProcessorMixin.check_argument_for_proper_class = allow_no_video  # type: ignore[method-assign]
    try:
        processor = cls(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                        chat_template=template.read_text(encoding="utf-8") if template.is_file() else None)
    finally:
        ProcessorMixin.check_argument_for_proper_class = check  # type: ignore[method-assign]
    present = [a for a in cls.get_attributes() if getattr(processor, a, None) is not None]
    processor.get_attributes = lambda: present  # save_pretrained writes the parts this instance has
    log.warning("%s: loaded without its video processor (%s); image and text rows only", name,
                str(error).strip().splitlines()[0])
    return processor


def chat_template_text(cfg: Any, processor: Any) -> str | None:
    """The template Axolotl's collator renders with: the config's, else the tokenizer's, else the processor's."""
    from mudpuppy.runtime.data import chat_templates

    if cfg.chat_template or cfg.chat_template_jinja:
        return chat_templates.resolve(cfg.chat_template, cfg.chat_template_jinja, processor.tokenizer)
    own = getattr(processor.tokenizer, "chat_template", None)
    if own:
        return str(own)
    if getattr(processor, "chat_template", None):
        return None  # apply_chat_template falls back to the processor's own
    raise UserError("chat_template: the processor and tokenizer have no chat template; name one "
                    "(chat_template: qwen2_vl, llama3_2_vision, gemma3, ...)")


def is_media_parameter(name: str) -> bool:
    return any(part in MEDIA_MODULES for part in name.split("."))


def freeze_media(model: Any) -> int:
    """requires_grad=False on every media-encoder parameter; returns how many tensors were frozen."""
    frozen = 0
    for name, param in model.named_parameters():
        if param.requires_grad and is_media_parameter(name):
            param.requires_grad = False
            frozen += 1
    if frozen:
        log.info("froze %d vision/audio parameter tensors", frozen)
    return frozen


def lora_targets(leaves: set[str], explicit: list[str]) -> str:
    """One peft regex (matched against full module names) for the language model's linears named ``leaves``
    plus the user's own ``lora_target_modules`` (names or regexes, taken as written)."""
    towers = "|".join(MEDIA_MODULES)
    parts = []
    if leaves:
        names = "|".join(sorted(re.escape(x) for x in leaves))
        parts.append(rf"(?!(?:.*\.)?(?:{towers})(?:\.|$))(?:.*\.)?(?:{names})")
    for item in explicit:
        parts.append(rf"(?:.*\.)?{re.escape(item)}" if re.fullmatch(r"\w+", item) else item)
    return "|".join(f"(?:{p})" for p in parts)
