"""The row contract every prompt strategy returns, and the error a strategy raises for one bad row.

A tokenized row is ``{"input_ids": [...], "attention_mask": [...], "labels": [...]}`` with ``labels`` equal to
``input_ids`` where the token is trained and ``IGNORE_INDEX`` (-100) where it is masked. Strategies raise
``RowError(field, why)``; the pipeline adds the file and row index and turns it into a ``UserError`` (or skips
the row under ``skip_invalid_rows``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

IGNORE_INDEX = -100
Row = dict[str, list[int]]


class RowError(Exception):
    def __init__(self, field: str, why: str) -> None:
        self.field = field
        self.why = why
        super().__init__(f"field {field!r}: {why}")


def need(row: Mapping[str, Any], field: str) -> Any:
    """A required field: absent or null is a ``RowError`` naming it."""
    if field not in row:
        raise RowError(field, "missing")
    value = row[field]
    if value is None:
        raise RowError(field, "is null")
    return value


def optional_text(row: Mapping[str, Any], field: str) -> Any:
    value = row.get(field)
    return "" if value is None else value
