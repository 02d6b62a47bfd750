"""``load_tokenizer(cfg)``: the tokenizer an Axolotl config describes, with the same additions Axolotl makes.

Order matters and follows Axolotl so token ids match: special tokens (bos/eos/pad/unk) first, then ``tokens``,
then ``additional_special_tokens``; a missing pad token falls back to EOS. The resolved chat template is set on
the tokenizer so ``save_pretrained`` writes it next to the trained weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mudpuppy.launcher.errors import UserError

LLAMA_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer", "CodeLlamaTokenizerFast")


def tokenizer_source(cfg: Any) -> str:
    return str(cfg.tokenizer_config or cfg.base_model)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get("TRANSFORMERS_OFFLINE", "") not in (
        "",
        "0",
    )


# tokenizer_config.json classes that AutoTokenizer resolves to the plain tokenizers-backed class
_PLAIN_FAST = ("PreTrainedTokenizerFast", "TokenizersBackend")


def _plain_fast_class(source: str, cfg: Any) -> bool:
    """True when AutoTokenizer would build the plain ``PreTrainedTokenizerFast`` from this local folder (its
    tokenizer_config.json names that class and tokenizer.json exists; Llama 3's tokenizers are like this).

    Why: AutoTokenizer also loads the model's config class, which imports torch (about 4 of the 7 seconds
    ``mudpuppy preprocess`` spends starting up); the class itself needs only ``tokenizers``. Equality with
    AutoTokenizer's result is checked in tests/unit/runtime/test_tokenizer_fast_path.py."""
    if cfg.trust_remote_code or cfg.tokenizer_use_fast is False:
        return False
    folder = Path(source)
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(config, dict) and config.get("tokenizer_class") in _PLAIN_FAST
            and (folder / "tokenizer.json").is_file())


def load_tokenizer(cfg: Any) -> Any:
    import transformers
    from transformers import AddedToken

    from mudpuppy.runtime.data import chat_templates

    source = tokenizer_source(cfg)
    local = Path(source).exists()
    if not local and (source.startswith((".", "/", "~")) or _offline()):
        raise UserError(
            f"tokenizer: {source!r} is not a local folder" + (" and the hub is offline" if _offline() else ""),
            hint="set base_model/tokenizer_config to a folder with tokenizer files",
        )
    kwargs: dict[str, Any] = {}
    if cfg.tokenizer_legacy is not None:
        kwargs["legacy"] = cfg.tokenizer_legacy
    if cfg.revision_of_model:
        kwargs["revision"] = cfg.revision_of_model
    cls: Any
    if cfg.tokenizer_type:
        cls = getattr(transformers, cfg.tokenizer_type, None)
        if cls is None:
            raise UserError(f"tokenizer_type: transformers has no class {cfg.tokenizer_type!r}")
    elif local and _plain_fast_class(source, cfg):
        cls = transformers.PreTrainedTokenizerFast
    else:
        from transformers import AutoTokenizer

        cls = AutoTokenizer
    try:
        tokenizer = cls.from_pretrained(
            source,
            trust_remote_code=bool(cfg.trust_remote_code),
            use_fast=True if cfg.tokenizer_use_fast is None else cfg.tokenizer_use_fast,
            **kwargs,
        )
    except (OSError, ValueError) as exc:
        raise UserError(f"tokenizer: cannot load {source!r}: {str(exc).splitlines()[0]}") from None

    if type(tokenizer).__name__ in LLAMA_CLASSES and not tokenizer.pad_token:
        tokenizer.pad_token = "</s>"
    if type(tokenizer).__name__ == "GPTNeoXTokenizerFast":
        tokenizer.add_special_tokens({"pad_token": "[PAD]"})
        os.environ["TOKENIZERS_PARALLELISM"] = "false"

    extra_special: list[str] | None = None
    if cfg.special_tokens:
        special = cfg.special_tokens.model_dump(exclude_none=True)
        extra_special = special.pop("additional_special_tokens", None)
        for key, value in special.items():
            tokenizer.add_special_tokens({key: AddedToken(value, rstrip=False, lstrip=False, normalized=False)})
        if (
            type(tokenizer).__name__ in ("LlamaTokenizerFast", "CodeLlamaTokenizerFast")
            and "bos_token" in special
            and "eos_token" in special
            and hasattr(tokenizer, "update_post_processor")
        ):
            tokenizer.update_post_processor()
    if cfg.tokens:
        tokenizer.add_tokens([AddedToken(t, rstrip=False, lstrip=False, normalized=False) for t in cfg.tokens])
    if extra_special is not None:
        tokenizer.add_special_tokens({"additional_special_tokens": extra_special})
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token

    if cfg.chat_template or cfg.chat_template_jinja:
        template = chat_templates.resolve(cfg.chat_template, cfg.chat_template_jinja, tokenizer)
        if cfg.default_system_message and cfg.chat_template == "chatml":
            template = template.replace("You are a helpful assistant.", cfg.default_system_message)
        tokenizer.chat_template = template
    return tokenizer
