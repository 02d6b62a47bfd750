"""``module.function`` paths from a config (GRPO dataset transforms, ``trl.reward_funcs``), imported from the
run's folder: the cwd, which is the unpacked bundle on a remote machine (the launcher packs local files the config
names), so a ``rewards.py`` next to the config works the same locally and on every backend.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mudpuppy.launcher import modules
from mudpuppy.launcher.errors import UserError


def module_file(path: str) -> Path | None:
    """The local source file a ``module.function`` path points at, when there is one (for cache keys, bundles)."""
    return modules.module_file(path)


def add_import_roots() -> str:
    """Put the run folder (and the bundle's ``files/python``) first on ``sys.path``; returns the cwd."""
    cwd = os.getcwd()
    for root in reversed(modules.import_roots(cwd)):
        if str(root) not in sys.path and (root == Path(cwd) or root.is_dir()):
            sys.path.insert(0, str(root))
    return cwd


def load_callable(path: str, where: str) -> Callable[..., Any]:
    """Import ``module.function`` with the cwd first on ``sys.path``; every failure is one ``UserError``."""
    module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise UserError(f"{where}: {path!r} is not a module.function path",
                        hint="e.g. rewards.length_reward for a function length_reward in rewards.py next to the config")
    cwd = add_import_roots()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UserError(f"{where}: cannot import {module_name!r} for {path!r}",
                            hint=f"put {module_name.replace('.', '/')}.py in the run folder ({cwd})") from None
        raise UserError(f"{where}: importing {module_name!r} failed: {exc}") from None
    except Exception as exc:  # the user's module raised while importing
        raise UserError(f"{where}: importing {module_name!r} raised {type(exc).__name__}: {exc}") from None
    func = getattr(module, attr, None)
    if func is None:
        public = ", ".join(n for n in dir(module) if not n.startswith("_")) or "nothing"
        raise UserError(f"{where}: module {module_name!r} has no attribute {attr!r}", hint=f"defined there: {public}")
    if not callable(func):
        raise UserError(f"{where}: {path!r} is a {type(func).__name__}, not a function")
    return func
