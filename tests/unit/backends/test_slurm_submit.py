"""Submission failures that need no cluster: no sbatch on PATH. The run is still recorded, as failed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mudpuppy.launcher import dispatch
from mudpuppy.launcher.errors import UserError
from mudpuppy.launcher.registry import Registry

pytestmark = pytest.mark.timeout(300)

EXAMPLES = Path(__file__).resolve().parents[3] / "templates" / "examples"


def test_missing_sbatch_is_one_line_and_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(tmp_path / "state"))
    bin_dir = tmp_path / "bin"  # a PATH with a shell and nothing else
    bin_dir.mkdir()
    for tool in ("bash", "mkdir", "test"):
        found = shutil.which(tool)
        if found:
            os.symlink(found, bin_dir / tool)
    overrides = {"launch.backend": "slurm", "launch.slurm.workdir": str(tmp_path / "shared"), "launch.name": "nosb"}
    prepared = dispatch.prepare("examples/tiny-alpaca.yml", overrides, "run-nosbatch")
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(UserError, match="sbatch not found on this machine") as info:
        dispatch.submit(prepared, "examples/tiny-alpaca.yml", Registry())
    assert "\n" not in info.value.one_line()
    row = Registry().get("run-nosbatch")
    assert row.status == "failed" and row.reason is not None and "sbatch not found" in row.reason
    assert row.handle is None and row.name == "nosb"
