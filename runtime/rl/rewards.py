"""``trl.reward_funcs`` -> the callables GRPOTrainer scores completions with, imported from the run folder.

Every entry must be ``module.function`` importable from the cwd (the bundle on a remote machine); a bad path,
a missing module or attribute, or something that is not a function is one ``UserError`` naming the entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mudpuppy.runtime.data.preference.custom import load_callable


def reward_functions(paths: list[str]) -> list[Callable[..., Any]]:
    return [load_callable(path, where=f"trl.reward_funcs[{i}]") for i, path in enumerate(paths)]
