"""Reading the registry's ``output`` column, ``SESSION:PATH``, where the session may itself hold colons.

Why not ``partition(":")``: SSH sessions are host lists such as ``user@10.0.0.5:2222,gpu2`` and SLURM/local
ones plain names, so the path starts at the first colon that is followed by ``/`` or ``~``.
"""

from __future__ import annotations

import re

_LOCATION = re.compile(r"^(.*?):([/~].*)$", re.DOTALL)


def split_output(text: str | None) -> tuple[str, str] | None:
    """``"gpu1:2222:/w/runs/R"`` -> ``("gpu1:2222", "/w/runs/R")``; None for anything else (a note, a URL)."""
    if not text:
        return None
    match = _LOCATION.match(text)
    if match is None or "://" in text.split(" ", 1)[0]:
        return None
    return match.group(1), match.group(2).split(" (", 1)[0].rstrip("/")


__all__ = ["split_output"]
