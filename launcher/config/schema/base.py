"""Shared base for config sections.

Every section forbids unknown keys: the loader checks names first (with file, line and a suggestion), so
pydantic's own ``extra_forbidden`` error only fires for configs built in Python.

Numbers are checked for what no trainer can use, whatever the key: NaN and infinities (``learning_rate: .nan``),
``true``/``false`` where a number is meant (pydantic's lax mode would read ``true`` as 1), and integers that
do not fit in 64 bits (a 23-digit seed, ``gradient_accumulation_steps: 1e27`` written out) since torch and
numpy would reject them only once training starts. Axolotl's lax coercions that mean something (``"2e-4"`` for
a float, ``4.0`` for an int) stay accepted.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

_INT64_MAX = 2**63 - 1
_KINDS: dict[tuple[type, str], tuple[bool, bool, bool]] = {}


def _kinds(annotation: Any) -> tuple[bool, bool, bool]:
    """(takes an int, takes a float, takes a bool or anything) for a field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        args = typing.get_args(annotation)
        parts = [_kinds(arg) for arg in (args[:1] if origin is typing.Annotated else args)]
        return any(p[0] for p in parts), any(p[1] for p in parts), any(p[2] for p in parts)
    if origin is typing.Literal:
        return False, False, any(isinstance(v, bool) for v in typing.get_args(annotation))
    if annotation is bool or annotation is Any:
        return False, False, True
    return annotation is int, annotation is float, False


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=False, populate_by_name=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _sane_number(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, int) or info.field_name is None:
            return value
        key = (cls, info.field_name)
        if key not in _KINDS:
            _KINDS[key] = _kinds(cls.model_fields[info.field_name].annotation)
        takes_int, takes_float, takes_bool = _KINDS[key]
        if isinstance(value, bool):
            if (takes_int or takes_float) and not takes_bool:
                raise PydanticCustomError("bool_not_number", "expected a number, not true/false")
        elif takes_int and abs(value) > _INT64_MAX:
            raise PydanticCustomError("int_too_big", "integer does not fit in 64 bits; no trainer can use it")
        return value
