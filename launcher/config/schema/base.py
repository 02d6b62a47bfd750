"""Shared base for config sections.

Every section forbids unknown keys: the loader checks names first (with file, line and a suggestion), so
pydantic's own ``extra_forbidden`` error only fires for configs built in Python.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=False, populate_by_name=True)
