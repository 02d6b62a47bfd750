"""Fixtures for integration tests: real sshd and SLURM on loopback (from tests/infra), a project folder with
the tiny example, and a private state dir. A missing service skips the test with the reason, except in CI
(CI=true), where it fails: there the services must be installed (tests/infra/install-deps.sh).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mudpuppy.tests.infra import services
from mudpuppy.tests.infra.helpers import require

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "templates" / "examples"


@pytest.fixture(scope="session")
def sshd() -> Iterator[services.Sshd]:
    missing = services.missing_tools("sshd", "ssh-keygen")
    require(f"sshd not installed ({', '.join(missing)} missing)" if missing else None)
    require(None if importlib.util.find_spec("fabric") else "fabric not installed (pip install 'mudpuppy[ssh]')")
    server = services.start_sshd()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def slurm() -> Iterator[services.SlurmCluster]:
    missing = services.missing_tools("slurmctld", "slurmd", "munged", "sbatch", "scontrol")
    require(f"SLURM not installed ({', '.join(missing)} missing)" if missing else None)
    require(None if os.geteuid() == 0 else "the SLURM fixture needs root (daemon users, /etc/hosts)")
    cluster = services.start_slurm()
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    yield cluster
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old
    cluster.stop()


@pytest.fixture()
def project(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A world-readable folder (SLURM jobs and sshd sessions read it) with examples/ and a private state dir."""
    root = Path(tempfile.mkdtemp(prefix="mudpuppy-it-"))
    root.chmod(0o755)
    shutil.copytree(EXAMPLES, root / "examples")
    monkeypatch.chdir(root)
    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(root / "state"))
    yield root
    shutil.rmtree(root, ignore_errors=True)
