"""The install locks (constraints/lock*.txt, scripts/lock.py) stay in sync with pyproject.toml.

Regenerating the lock needs the network and a minute, so CI checks the contract instead: every requirement in
pyproject (core + each extra that installs together) is locked at a version its specifier accepts (judged by
``packaging``, not by our own parser), nothing is locked "via mudpuppy" that pyproject no longer asks for, torch is
the CPU pin of constraints/cpu.txt without torch's CUDA-only wheels, and, inside ``make test`` (which builds the
venv from the lock: MUDPUPPY_LOCKED_VENV=1), every installed locked package is at its locked version.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from mudpuppy.launcher import lockfile

pytestmark = pytest.mark.timeout(60)
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (the lock itself covers 3.10 too)
REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
TOGETHER = sorted(set(EXTRAS) - {"skypilot"})
LINUX = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix"}


def _requirements(extras: list[str]) -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    return reqs + [Requirement(r) for e in extras for r in EXTRAS[e]]


def _lock(name: str) -> dict[str, list[lockfile.Pin]]:
    return lockfile.parse((REPO / "constraints" / name).read_text())


def _check_satisfied(reqs: list[Requirement], pins: dict[str, list[lockfile.Pin]]) -> int:
    checked = 0
    for req in reqs:
        for python in ("3.10", "3.11", "3.12"):
            env = {**default_environment(), **LINUX, "python_version": python, "python_full_version": python + ".0",
                   "extra": ""}
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            pin = lockfile.pin_for(req.name, python, pins)
            assert pin is not None, f"{req} (pyproject) is not in the lock for Python {python}: run scripts/lock.py"
            assert req.specifier.contains(Version(pin.version), prereleases=True), (
                f"lock has {pin.name}=={pin.version}, pyproject asks {req}: run scripts/lock.py")
            checked += 1
    return checked


def test_every_requirement_that_installs_together_is_locked_at_an_allowed_version() -> None:
    pins = _lock("lock.txt")
    reqs = _requirements(TOGETHER)
    assert _check_satisfied(reqs, pins) >= 3 * 30
    wanted = {canonicalize_name(r.name) for r in reqs}
    top = {k for k, entries in pins.items() if any("mudpuppy" in p.parents for p in entries)}
    assert top == wanted, f"lock and pyproject disagree on direct dependencies: {sorted(top ^ wanted)}"


def test_skypilot_has_its_own_lock() -> None:
    pins = _lock("lock-skypilot.txt")
    _check_satisfied(_requirements(["skypilot"]), pins)
    assert "skypilot" not in _lock("lock.txt")
    # the reason it is separate: SkyPilot's click cap excludes the click the training environment locks
    sky_click = Version(pins["click"][0].version)
    assert sky_click != Version(_lock("lock.txt")["click"][0].version)


def test_torch_is_the_cpu_pin_without_cuda_wheels() -> None:
    cpu = Requirement((REPO / "constraints" / "cpu.txt").read_text().split()[0])
    pins = _lock("lock.txt")
    assert [p.version for p in pins["torch"]] == [str(next(iter(cpu.specifier)).version)]
    assert not [k for k in pins if re.match(r"(nvidia|cuda)-", k)]


def test_the_fsspec_family_agrees_with_datasets() -> None:
    """The ResolutionImpossible of old pip: s3fs/gcsfs pin fsspec exactly, datasets caps it. The locked versions
    must satisfy every one of those requirements (read from the packages' own metadata when installed)."""
    pins = _lock("lock.txt")
    fsspec = Version(pins["fsspec"][0].version)
    for name in ("s3fs", "gcsfs", "datasets"):
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        if metadata.version(name) != pins[name][0].version:
            continue  # another version installed here: its metadata says nothing about the locked one
        for r in map(Requirement, requires):
            if canonicalize_name(r.name) == "fsspec" and r.marker is None:
                assert r.specifier.contains(fsspec), f"{name} needs {r}, lock has fsspec=={fsspec}"


@pytest.mark.skipif(os.environ.get("MUDPUPPY_LOCKED_VENV") != "1", reason="only where make built the venv")
def test_the_environment_was_installed_from_the_lock() -> None:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    pins = _lock("lock.txt")
    matched = 0
    # Only what is installed in site-packages: importing setuptools appends its _vendor folder to sys.path, and
    # the vendored copies (platformdirs, packaging, ...) are setuptools' own pins, not installs from the lock.
    for dist in metadata.distributions(path=[sysconfig.get_paths()["purelib"]]):
        name = canonicalize_name(dist.metadata["Name"])
        pin = lockfile.pin_for(name, python, pins)
        if pin is None:
            continue
        assert dist.version.split("+")[0] == pin.version, f"{name} {dist.version} installed, lock has {pin.version}"
        matched += 1
    assert matched >= 40  # the runtime extra alone locks ~50 packages
