"""Local Python modules a config names by dotted path (dataset ``type: pkg.module`` strategies,
``module.function`` transforms, ``trl.reward_funcs``): where their source is, so the bundle can carry it and the
runtime can import it from the same place on every backend.

Locally a module is found next to where the command runs (the cwd); inside a bundle it travels as
``files/python/<module path>.py``, and the run folder links ``files``, so ``import_roots`` covers both.
Stdlib only: the runtime imports this too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

BUNDLE_PYTHON = "python"  # under the bundle's files/ folder


def import_roots(cwd: str | os.PathLike[str] | None = None) -> list[Path]:
    base = Path(cwd or os.getcwd())
    return [base, base / "files" / BUNDLE_PYTHON]


def _candidates(dotted: str) -> Iterable[list[str]]:
    """Module name parts a dotted path may point at: all of it (``pkg.module``), then without the last part
    (``module.function``)."""
    parts = [p for p in dotted.split(".") if p]
    if len(parts) >= 1:
        yield parts
    if len(parts) >= 2:
        yield parts[:-1]


def local_sources(dotted: str, roots: list[Path] | None = None) -> list[tuple[str, Path]]:
    """``(relative path, file)`` for the local source of ``dotted`` plus the ``__init__.py`` of each package
    above it; empty when nothing local matches (a built-in type name, a hub id, an installed package)."""
    if not isinstance(dotted, str) or "/" in dotted or "\\" in dotted or not dotted.replace(".", "").replace(
            "_", "").isalnum():
        return []
    for root in roots or import_roots():
        for parts in _candidates(dotted):
            rel = Path(*parts)
            for file in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
                if file.is_file():
                    found = [(file.relative_to(root).as_posix(), file)]
                    for depth in range(1, len(parts)):
                        init = root.joinpath(*parts[:depth], "__init__.py")
                        if init.is_file():
                            found.append((init.relative_to(root).as_posix(), init))
                    return found
    return []


def module_file(dotted: str) -> Path | None:
    """The main source file ``dotted`` resolves to locally, if any (for cache keys)."""
    found = local_sources(dotted)
    return found[0][1] if found else None


def config_module_paths(data: dict) -> list[str]:
    """Dotted paths in a dumped config that may name local modules."""
    paths: list[str] = []
    for key in ("datasets", "test_datasets"):
        for entry in data.get(key) or []:
            if isinstance(entry, dict) and isinstance(entry.get("type"), str) and "." in entry["type"]:
                paths.append(entry["type"])
    trl = data.get("trl")
    if isinstance(trl, dict):
        paths += [p for p in trl.get("reward_funcs") or [] if isinstance(p, str)]
    return paths
