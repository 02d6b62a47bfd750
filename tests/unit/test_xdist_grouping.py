"""`make test` runs two xdist workers and relies on every service test (SLURM's fixed ports, sshd, Ray, S3) staying
on one of them. xdist's grouping broke silently once (pytest 9.2 with xdist 3.8): this runs a real two-worker
pytest over a scratch tree whose conftest is the suite's own hook and checks where each test ran."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)


def test_service_tests_share_one_worker_under_loadgroup(tmp_path: Path) -> None:
    (tmp_path / "tests" / "integration").mkdir(parents=True)
    (tmp_path / "tests" / "unit").mkdir()
    (tmp_path / "tests" / "conftest.py").write_text(
        "from mudpuppy.tests.conftest import pytest_collection_modifyitems  # noqa: F401\n")
    body = "".join(f"def test_{i}():\n    import time; time.sleep(0.2)\n" for i in range(6))
    (tmp_path / "tests" / "integration" / "test_services.py").write_text(body)
    (tmp_path / "tests" / "unit" / "test_plain.py").write_text(body)
    (tmp_path / "tests" / "unit" / "test_uses_fixture.py").write_text(
        "import pytest\n@pytest.fixture\ndef slurm():\n    return 1\n"
        "def test_cluster(slurm):\n    import time; time.sleep(0.2)\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p",
                           "no:cacheprovider", "-p", "no:randomly", "tests"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ran = re.findall(r"\[(gw\d)\].*PASSED (\S+)", done.stdout)
    assert len(ran) == 13, done.stdout[-3000:]
    service = {worker for worker, test in ran if "integration/" in test or "test_cluster" in test}
    assert len(service) == 1, ran
    assert all(test.endswith("@services") for _, test in ran if "integration/" in test or "test_cluster" in test)
    assert {worker for worker, _ in ran} == {"gw0", "gw1"}  # the rest is spread over both
