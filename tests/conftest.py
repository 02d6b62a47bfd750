"""Suite-wide rules enforced while the tests run.

In CI (``CI=true``) or with ``MUDPUPPY_REQUIRE_EXTRAS=1`` (``make test``) a test may not skip, whatever the
reason: a missing extra (``pytest.importorskip``), a service that cannot start (not root, sshd or SLURM not
installed, a port taken) or anything else. ``make test`` installs every extra and service, so there a skip
means a broken install and must fail loudly instead of passing green. Only tests marked ``gpu`` may skip
(the hardware is absent on CPU machines, not broken). Outside those settings a laptop without Ray or SLURM
still runs the rest, with the reason shown by ``-ra``.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

MAY_SKIP_MARKERS = ("gpu",)

# Tests that start machine-wide services (SLURM's fixed ports and /etc/hosts tag, sshd, Ray, the S3 server) get
# one xdist group, which keeps them on a single worker under `pytest -n 2 --dist loadgroup` (`make test`). This
# needs pytest < 9.2 (pyproject): 9.2 moved node ids and xdist 3.8's grouping silently stopped (xdist#1386).
SERVICE_DIRS = ("tests/integration/",)
SERVICE_FIXTURES = frozenset({"sshd", "slurm", "ray_cluster", "ray_head", "s3_server", "s3"})


def required() -> bool:
    return os.environ.get("CI") == "true" or bool(os.environ.get("MUDPUPPY_REQUIRE_EXTRAS"))


def _reason(report: Any) -> str:
    return str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)


def _fail_skip(report: Any, item: Any = None) -> None:
    if not (report.skipped and required()) or hasattr(report, "wasxfail"):
        return
    if item is not None and any(item.get_closest_marker(m) for m in MAY_SKIP_MARKERS):
        return
    report.outcome = "failed"
    report.longrepr = (f"skipped in a required run (CI=true or MUDPUPPY_REQUIRE_EXTRAS=1): {_reason(report)} "
                       "-- install every extra and service (`make venv`, tests/infra/install-deps.sh, run as root)")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: Any) -> Generator[None, Any, None]:
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Generator[None, Any, None]:
    outcome = yield
    _fail_skip(outcome.get_result(), item)


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``tiny_vlm(family)`` -> a tiny local model folder for that family (tests/fixtures/tiny_mm.py), built
    once per session and shared by every multimodal test."""
    from pathlib import Path

    from tests.fixtures.tiny_mm import build_tiny_vlm

    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny_vlm(family, tmp_path_factory.mktemp(f"tiny-vlm-{family}"))
        return built[family]

    return get


@pytest.fixture(scope="session")
def test_images(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The generated test images (tests/fixtures/tiny_mm.make_test_images), written once per session."""
    from tests.fixtures.tiny_mm import make_test_images

    return make_test_images(tmp_path_factory.mktemp("mm-images"))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns xdist_group markers into the node ids' @group
def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    root = str(config.rootpath)
    for item in items:
        rel = os.path.relpath(str(item.path), root).replace(os.sep, "/")
        uses_service = SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if rel.startswith(SERVICE_DIRS) or uses_service or item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.xdist_group("services"))
