"""Helpers shared by the integration tests: run the real CLI, check one-line errors, skip-or-fail on services."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

FAKE = "mudpuppy.tests.infra.fake_runtime"


def require(problem: str | None) -> None:
    """Skip with the reason on a laptop; in a required run (CI=true or MUDPUPPY_REQUIRE_EXTRAS=1) a missing
    service is a failure (tests/conftest.py turns any other skip there into a failure too)."""
    if not problem:
        return
    if os.environ.get("CI") == "true" or os.environ.get("MUDPUPPY_REQUIRE_EXTRAS"):
        pytest.fail(f"{problem} (required run: services must be installed; run tests/infra/install-deps.sh as root)")
    pytest.skip(problem)


def runtime_missing() -> str | None:
    if importlib.util.find_spec("mudpuppy.runtime.__main__") is None:
        return "mudpuppy.runtime has no __main__ yet (the training runtime is not in this tree)"
    return None


def mp(*args: str, timeout: float = 180, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI (``python -m mudpuppy``) so errors are rendered exactly as users see them."""
    return subprocess.run(
        [sys.executable, "-m", "mudpuppy", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, check=False,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert proc.returncode == 2, proc.stderr
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return errors[0]
