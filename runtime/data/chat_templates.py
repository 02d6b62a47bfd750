"""Chat template names -> jinja text, resolved the way Axolotl resolves ``chat_template:``.

Named templates ship as ``templates/chat/<name>.jinja``; ``tokenizer_default`` reads the tokenizer's own
template, ``tokenizer_default_fallback_<name>`` prefers it and falls back to ``<name>``, and ``jinja`` takes
``chat_template_jinja`` (inline text or a path to a .jinja file).
"""

from __future__ import annotations

import logging
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from mudpuppy.launcher.errors import UserError

log = logging.getLogger(__name__)
JINJA = "jinja"
TOKENIZER_DEFAULT = "tokenizer_default"
FALLBACK_PREFIX = "tokenizer_default_fallback_"
# Names are exactly the template files Axolotl ships (36, the same in 0.19 and current main), their text copied
# verbatim: a name Axolotl would reject is rejected here too, so a config never means different things in the
# two tools.


@cache
def shipped_templates() -> dict[str, str]:
    folder = resources.files("mudpuppy.templates") / "chat"
    out: dict[str, str] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".jinja"):
            out[entry.name[: -len(".jinja")]] = entry.read_text(encoding="utf-8")
    return out


def named_template(name: str) -> str:
    templates = shipped_templates()
    if name not in templates:
        known = ", ".join(sorted([*templates, JINJA, TOKENIZER_DEFAULT, FALLBACK_PREFIX + "<name>"]))
        raise UserError(f"chat_template: unknown template {name!r}", hint=f"known: {known}")
    return templates[name]


def resolve(choice: str | None, jinja: str | None, tokenizer: Any, where: str = "chat_template") -> str:
    """The template text for one ``chat_template``/``chat_template_jinja`` pair (dataset or root level)."""
    choice = choice or (JINJA if jinja else TOKENIZER_DEFAULT)
    if choice == JINJA:
        if not jinja:
            raise UserError(f"{where}: 'jinja' needs chat_template_jinja (template text or a .jinja file path)")
        candidate = Path(jinja)
        if len(jinja) < 4096 and "{" not in jinja and candidate.is_file():
            return candidate.read_text(encoding="utf-8")
        return jinja
    own = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if choice == TOKENIZER_DEFAULT:
        if not own:
            raise UserError(
                f"{where}: tokenizer_default, but the tokenizer has no chat_template",
                hint="name one (chatml, llama3, ...) or use tokenizer_default_fallback_chatml",
            )
        return str(own)
    if choice.startswith(FALLBACK_PREFIX):
        if own:
            return str(own)
        choice = choice[len(FALLBACK_PREFIX):]
    return named_template(choice)


def dataset_choice(cfg: Any, ds: Any) -> tuple[str | None, str | None]:
    """Dataset-level keys win; without them the tokenizer's template (already set from the root keys by
    ``load_tokenizer``) applies, as in Axolotl."""
    if getattr(ds, "chat_template", None):
        return ds.chat_template, ds.chat_template_jinja
    jinja = getattr(ds, "chat_template_jinja", None)
    if jinja and getattr(ds, "type", None) == "chat_template":
        # Axolotl's schema gives such an entry chat_template: tokenizer_default, which ignores the jinja.
        log.warning("datasets: %s: chat_template_jinja without chat_template: jinja is ignored (as in Axolotl); "
                    "add chat_template: jinja to use it", getattr(ds, "path", "?"))
    elif jinja:
        return JINJA, jinja
    return TOKENIZER_DEFAULT, None
