"""What a user's value may contain once it is rendered into a job script, and how it is quoted there.

Every backend renders config values into text something else executes: sbatch scripts (``#SBATCH`` lines, then
bash), SSH host scripts, SkyPilot setup/run, the Ray entrypoint, Dockerfiles and Modal's image commands.
``shlex.quote`` keeps a value one shell word, but a newline still ends an ``#SBATCH`` line (sbatch stops reading
directives at the first non-comment line, so the rest of the value runs as a command) or a Dockerfile
instruction (the rest becomes a new ``RUN``). So values are checked once, in the ``launch:`` schema, and the
renderers check what does not come from the schema (file names, CLI flags) with the same functions:

- no control characters at all (C0, DEL, C1, Unicode line/paragraph separators): no legitimate partition,
  path, image or environment value needs one, and rejecting them is simpler to trust than escaping per format;
- environment variable names are shell identifiers, because they are written unquoted in ``export NAME=...``.
"""

from __future__ import annotations

import re
import shlex
import unicodedata

from mudpuppy.launcher.errors import UserError

__all__ = ["ENV_NAME", "bad_character", "check_env_name", "check_text", "require_safe", "sbatch_word"]

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", "\x00": "a NUL byte"}


def bad_character(text: str) -> str | None:
    """A description of the first character that may not appear in a rendered script, or None."""
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            return _NAMES.get(ch, f"control character U+{ord(ch):04X}")
    return None


def check_text(value: str) -> str:
    """For pydantic validators: the value, or ValueError naming the character."""
    bad = bad_character(value)
    if bad:
        raise ValueError(f"contains {bad}; values rendered into job scripts may not hold control characters")
    return value


def check_env_name(name: str) -> str:
    if not ENV_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not an environment variable name (letters, digits and _, not starting with a digit)"
        )
    return name


def require_safe(value: str, what: str) -> str:
    """For renderers: the value, or a one-line UserError naming where it came from (``what``)."""
    bad = bad_character(value)
    if bad:
        raise UserError(f"{what} {value!r} contains {bad}", hint="remove it; job scripts cannot carry control "
                        "characters safely")
    return value


def sbatch_word(word: str) -> str:
    """``word`` quoted for an ``#SBATCH`` line, as sbatch's own tokenizer reads it back.

    sbatch groups quoted text like a shell but, unlike one, honours backslash escapes inside single quotes too
    (``'a\\b'`` reads as ``ab``), so ``shlex.quote`` is not exact there: escape ``\\`` and ``'`` inside the quotes.
    Plain words stay bare, as ``shlex.quote`` leaves them.
    """
    require_safe(word, "#SBATCH option")
    if shlex.quote(word) == word:
        return word
    return "'" + word.replace("\\", "\\\\").replace("'", "\\'") + "'"
