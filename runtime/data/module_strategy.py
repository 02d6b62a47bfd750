"""``type: pkg.module``: a prompt strategy from the user's own Python module, loaded the way Axolotl loads one.

Axolotl imports ``pkg.module`` and calls its ``load(tokenizer, cfg[, ds_cfg])``; the object returned tokenizes
rows through ``tokenize_prompt`` (one row, or a batch of columns when ``supports_batched`` is true), may drop
rows first with ``filter_rows``, and returns ``input_ids``/``attention_mask``/``labels``. The module is found
in the run folder (next to the config locally, ``files/python`` inside a bundle, which carries it). A strategy
that subclasses Axolotl's own classes needs Axolotl installed, which mudpuppy does not ship; a plain class works.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.data.rows import Row, RowError

COLUMNS = ("input_ids", "attention_mask", "labels")


class DatasetOptions(dict):  # type: ignore[type-arg]
    """The dataset entry as Axolotl hands it over: a dict whose missing keys read as None, also as attributes."""

    def __getattr__(self, name: str) -> Any:
        return self.get(name)


def find_module(kind: str) -> Any | None:
    """The imported module for ``kind`` when it names one (``None`` when nothing by that name exists)."""
    from mudpuppy.runtime.data.preference.custom import add_import_roots

    if "." not in kind or not all(part.isidentifier() for part in kind.split(".")):
        return None
    add_import_roots()
    try:
        return importlib.import_module(kind)
    except ModuleNotFoundError as exc:
        if exc.name and kind.startswith(exc.name):
            return None
        raise UserError(f"type {kind!r}: importing it failed: {exc}",
                        hint="a strategy that subclasses Axolotl's classes needs axolotl installed; "
                             "a plain class with tokenize_prompt works without it") from None
    except Exception as exc:  # the user's module raised while importing
        raise UserError(f"type {kind!r}: importing it raised {type(exc).__name__}: {exc}") from None


class ModuleStrategy:
    batched = False

    def __init__(self, kind: str, strategy: Any) -> None:
        self.name = kind
        self.strategy = strategy
        self.supports_batched = bool(getattr(strategy, "supports_batched", False))
        self.filter_rows = getattr(strategy, "filter_rows", None)

    def _row(self, out: Any, index: str) -> Row:
        if not isinstance(out, Mapping) or any(k not in out for k in COLUMNS):
            raise RowError(self.name, f"tokenize_prompt returned {type(out).__name__} without "
                                      f"{', '.join(COLUMNS)}{index}")
        return {k: [int(v) for v in out[k]] for k in COLUMNS}

    def _call(self, arg: Any) -> Any:
        try:
            return self.strategy.tokenize_prompt(arg)
        except RowError:
            raise
        except Exception as exc:  # user code: one line naming the strategy, not a traceback
            raise RowError(self.name, f"tokenize_prompt raised {type(exc).__name__}: {exc}") from None

    def _batch(self, rows: list[dict[str, Any]]) -> list[list[Row]]:
        """Rows out per row in; a batch that changes the row count is kept whole under its first row."""
        if not rows:
            return []
        out = self._call({k: [r.get(k) for r in rows] for k in rows[0]})
        if not isinstance(out, Mapping) or any(k not in out for k in COLUMNS):
            raise RowError(self.name, f"tokenize_prompt (batched) returned no {', '.join(COLUMNS)} columns")
        made = [self._row({k: out[k][i] for k in COLUMNS}, f" (row {i})") for i in range(len(out["input_ids"]))]
        if len(made) == len(rows):
            return [[m] for m in made]
        return [made] + [[] for _ in rows[1:]]

    def tokenize_rows(self, rows: list[Mapping[str, Any]]) -> list[list[Row] | RowError]:
        keep = [dict(r) for r in rows]
        mask = [True] * len(keep)
        if self.filter_rows:
            mask = [bool(self.filter_rows(r)) for r in keep]
        if self.supports_batched:
            chosen = [r for r, m in zip(keep, mask, strict=True) if m]
            try:
                made: list[list[Row] | RowError] = list(self._batch(chosen))
            except RowError as exc:
                made = [exc] * len(chosen)
            pieces = iter(made)
            return [next(pieces) if m else [] for m in mask]
        result: list[list[Row] | RowError] = []
        for row, m in zip(keep, mask, strict=True):
            if not m:
                result.append([])
                continue
            try:
                result.append([self._row(self._call(row), "")])
            except RowError as exc:
                result.append(exc)
        return result


def module_strategy(kind: str, module: Any, cfg: Any, ds: Any, tokenizer: Any) -> ModuleStrategy:
    load = getattr(module, "load", None)
    if not callable(load):
        raise UserError(f"datasets: {ds.path}: type {kind!r}: the module has no load(tokenizer, cfg, ds_cfg) function")
    kwargs: dict[str, Any] = {}
    if "ds_cfg" in inspect.signature(load).parameters:
        kwargs["ds_cfg"] = DatasetOptions(ds.model_dump(exclude_none=True) if hasattr(ds, "model_dump") else ds)
    try:
        made = load(tokenizer, cfg, **kwargs)
    except Exception as exc:
        raise UserError(f"datasets: {ds.path}: type {kind!r}: load() raised {type(exc).__name__}: {exc}") from None
    if made is None or not callable(getattr(made, "tokenize_prompt", None)):
        raise UserError(f"datasets: {ds.path}: type {kind!r}: load() returned {type(made).__name__}, "
                        "not a strategy with tokenize_prompt(row)")
    return ModuleStrategy(kind, made)
