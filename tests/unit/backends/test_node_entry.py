from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mudpuppy.launcher.node_entry import exit_code_of


@pytest.mark.parametrize(
    ("codes", "expected"),
    [([75, 75], 75), ([75, -15], 75), ([2], 2), ([75, 1], 1), ([1, -15], 1), ([-9], 1), ([2, 75], 1)],
)
def test_exit_code_mapping(codes: list[int], expected: int) -> None:
    assert exit_code_of(codes) == expected


def test_torchrun_keeps_the_requeue_code(tmp_path: Path) -> None:
    """Plain torchrun would exit 1 here; node_entry must hand 75 back to the backend."""
    pkg = tmp_path / "exit75mod.py"
    pkg.write_text("import sys\nsys.exit(75)\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mudpuppy.launcher.node_entry", "--nproc-per-node=2", "--master-port=29533",
         "--module=exit75mod", "unused-bundle"],
        cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 75, proc.stderr[-2000:]
