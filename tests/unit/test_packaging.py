"""The repo root is the package: every subpackage must be declared, and the wheel must carry the templates."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
NOT_PACKAGED = {"tests", "bench", ".venv", ".demo", "build", "dist", ".git", "templates"}


def declared_packages() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(pyproject["tool"]["setuptools"]["packages"])


def test_every_subpackage_is_declared_in_pyproject() -> None:
    found = {"mudpuppy", "mudpuppy.templates"}
    for folder, dirs, files in os.walk(ROOT):
        rel = Path(folder).relative_to(ROOT)
        if rel.parts and (rel.parts[0] in NOT_PACKAGED or rel.parts[0].startswith(".")):
            dirs.clear()
            continue
        if rel.parts and "__init__.py" in files:
            found.add(".".join(("mudpuppy", *rel.parts)))
    assert found == declared_packages()


@pytest.mark.slow
def test_wheel_contains_code_and_templates(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(ROOT)],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("mudpuppy-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "mudpuppy/launcher/cli/__init__.py" in names
    assert "mudpuppy/launcher/config/schema/root.py" in names
    assert "mudpuppy/launcher/config/axolotl_main.json" in names  # the known-key data the loader reads
    assert "mudpuppy/templates/examples/tiny-alpaca.yml" in names
    assert "mudpuppy/templates/examples/tiny-llama/tokenizer.json" in names
    assert "mudpuppy/templates/examples/data/alpaca_tiny.jsonl" in names
    assert not any(n.startswith(("mudpuppy/tests/", "mudpuppy/bench/", "mudpuppy/.venv")) for n in names)
