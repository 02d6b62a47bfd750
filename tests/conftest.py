"""Suite-wide rule: in CI (or with MUDPUPPY_REQUIRE_EXTRAS=1) a test may not skip because an extra is missing.

Tests use ``pytest.importorskip`` so a laptop without Ray or Modal can still run the rest; ``make test``
installs every extra, so there such a skip means a broken install and must fail loudly instead of passing green.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

_MISSING_IMPORT = "could not import"


def _required() -> bool:
    return os.environ.get("CI") == "true" or bool(os.environ.get("MUDPUPPY_REQUIRE_EXTRAS"))


def _fail_missing_extra(report: Any) -> None:
    if report.skipped and _required():
        reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
        if _MISSING_IMPORT in reason:
            report.outcome = "failed"
            report.longrepr = f"required extra missing (install with `make venv`): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: Any) -> Generator[None, Any, None]:
    outcome = yield
    _fail_missing_extra(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Generator[None, Any, None]:
    outcome = yield
    _fail_missing_extra(outcome.get_result())
