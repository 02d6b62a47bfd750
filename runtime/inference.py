"""``inference``: generate from a trained model with the prompt format it was trained on.

A model trained on chat data is prompted through the chat template saved with it; one trained on an
instruction format (alpaca, ...) gets that format's prompt built by the same prompter the data pipeline used, so
inference tokenization matches training tokenization.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mudpuppy.launcher.errors import UserError


def load_for_inference(cfg: Any, *, lora_model_dir: str | None = None,
                       base_model: str | None = None) -> tuple[Any, Any]:
    from mudpuppy.runtime.merge import _trained_tokenizer, load_base_and_tokenizer

    if base_model:
        path = Path(base_model)
        if not (path / "config.json").is_file():
            raise UserError(f"--base-model: {base_model!r} has no config.json")
        import transformers

        tokenizer = _trained_tokenizer(path)
        if tokenizer is None:
            raise UserError(f"--base-model: {base_model!r} has no tokenizer files")
        auto_cls = getattr(transformers, cfg.resolved_model_type(), transformers.AutoModelForCausalLM)
        return auto_cls.from_pretrained(str(path)).eval(), tokenizer
    adapter = Path(lora_model_dir) if lora_model_dir else (Path(cfg.output_dir) if cfg.adapter else None)
    if adapter is not None:
        from peft import PeftModel

        from mudpuppy.runtime.merge import adapter_dir

        adapter = adapter_dir(cfg, str(adapter))
        model, tokenizer, _ = load_base_and_tokenizer(cfg, on_cpu=bool(cfg.lora_on_cpu), tokenizer_dir=adapter)
        return PeftModel.from_pretrained(model, str(adapter)).eval(), tokenizer
    out = Path(cfg.output_dir)
    if not (out / "config.json").is_file():
        raise UserError(f"no trained model in {cfg.output_dir!r}", hint="train first, or pass --base-model DIR")
    return load_for_inference(cfg, base_model=str(out))


def format_prompt(cfg: Any, tokenizer: Any, text: str) -> str:
    """The training prompt for a user message: chat template when trained on chats, else the instruction format."""
    ds = (cfg.datasets or [None])[0]
    kind = getattr(ds, "type", None) if ds is not None else None
    if isinstance(kind, str) and kind == "completion":
        return text
    chat_kind = isinstance(kind, str) and (kind == "chat_template" or kind.startswith("sharegpt"))
    if (chat_kind or kind is None) and tokenizer.chat_template:
        messages = [{"role": "user", "content": text}]
        rendered: str = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return rendered
    if ds is not None:
        from mudpuppy.runtime.data.strategies import build_strategy

        strategy = build_strategy(cfg, ds, tokenizer)
        prompter = getattr(strategy, "prompter", None)
        if prompter is not None:
            built: str = prompter.build(text, "", None)
            return built
    return text


def generate(model: Any, tokenizer: Any, prompt: str, *, max_new_tokens: int = 64, temperature: float = 0.0) -> str:
    import torch

    encoded = tokenizer(prompt, return_tensors="pt", add_special_tokens=not _starts_with_bos(tokenizer, prompt))
    device = next(model.parameters()).device
    encoded = {k: v.to(device) for k, v in encoded.items()}
    options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id
                               if tokenizer.pad_token_id is not None else tokenizer.eos_token_id}
    if temperature > 0:
        options.update(do_sample=True, temperature=temperature)
    else:
        options["do_sample"] = False
    with torch.no_grad():
        output = model.generate(**encoded, **options)
    new_tokens = output[0, encoded["input_ids"].shape[1]:]
    text: str = tokenizer.decode(new_tokens, skip_special_tokens=True)
    return text


def _starts_with_bos(tokenizer: Any, prompt: str) -> bool:
    return bool(tokenizer.bos_token) and prompt.startswith(tokenizer.bos_token)


def generate_with_images(cfg: Any, model: Any, tokenizer: Any, text: str, images: list[str], *,
                         max_new_tokens: int = 64, temperature: float = 0.0) -> str:
    """One user turn of images then text, rendered by the processor with the training chat template."""
    from mudpuppy.runtime.data.multimodal import MediaPolicy, check_image
    from mudpuppy.runtime.data.rows import RowError
    from mudpuppy.runtime.model.multimodal import chat_template_text, load_processor

    if not cfg.processor_type:
        raise UserError("--image needs a multimodal config (processor_type: AutoProcessor)")
    processor = load_processor(cfg, tokenizer)
    policy = MediaPolicy.of(cfg, processor)
    parts: list[dict[str, Any]] = []
    for image in images:
        path = Path(image).expanduser()
        if not path.is_file():
            raise UserError(f"--image: {image} does not exist")
        try:
            check_image(path.read_bytes, "--image", image, policy.max_pixels)
        except RowError as err:
            raise UserError(f"--image: {err.why}") from None
        from transformers.image_utils import load_image

        parts.append({"type": "image", "image": load_image(str(path))})
    messages = [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]
    template = chat_template_text(cfg, processor)
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt", **({"chat_template": template} if template else {}))
    import torch

    device = next(model.parameters()).device
    inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in inputs.items()}
    options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": temperature > 0,
                               "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                               else tokenizer.eos_token_id}
    if temperature > 0:
        options["temperature"] = temperature
    with torch.no_grad():
        output = model.generate(**inputs, **options)
    answer: str = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return answer
