"""The compute nodes' venv in the sbatch script, run for real with bash and flock (only python/pip are stand-ins,
so no network): two jobs starting at once build the venv once, one after the other, never into the same folder
at the same time. The cluster test (test_launch_slurm) runs the wheel step of the same block on real nodes."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from mudpuppy.backends.slurm import _environment_lines, venv_dir
from mudpuppy.launcher.config.schema.launch import LaunchSection

pytestmark = pytest.mark.timeout(120)

WHEEL = "wheels/mudpuppy-0.1.0-py3-none-any.whl"
IMAGE = {"schema": 1, "python": "3.11", "packages": ["torch==2.13.0"], "wheel": WHEEL}
STUB = """#!/bin/bash
# python3.11 -m venv DIR makes DIR/bin/python (this stub); DIR/bin/python -m pip ... logs start/end around a pause
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; echo "venv $3" >> "$STUB_LOG"; exit 0; fi
echo "start $*" >> "$STUB_LOG"; sleep 0.4; echo "end $*" >> "$STUB_LOG"
"""


def _bundle(path: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(WHEEL)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"whl\n"))


def test_two_jobs_at_once_build_the_venv_once(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    bundle = shared / "bundles" / "b.tar.gz"
    bundle.parent.mkdir(parents=True)
    _bundle(bundle)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3.11").write_text(STUB)
    (bin_dir / "python3.11").chmod(0o755)
    launch = LaunchSection.model_validate({"backend": "slurm", "slurm": {"workdir": str(shared)}})
    script = "set -uo pipefail\n" + "\n".join(_environment_lines(launch, str(shared), str(bundle), IMAGE)) + "\n"
    log = tmp_path / "stub.log"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "STUB_LOG": str(log)}
    jobs = [subprocess.Popen(["bash", "-c", script], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [job.communicate(timeout=60)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs
    venv = Path(venv_dir(str(shared), IMAGE))
    lines = log.read_text().splitlines()
    assert lines.count(f"venv {venv}") == 1, lines  # created once
    installs = [line for line in lines if line.startswith("start")]
    assert len(installs) == 3, lines  # pip upgrade, the packages, the wheel: once each
    assert any("torch==2.13.0" in line for line in installs) and any(WHEEL.split("/")[1] in line for line in installs)
    for i in range(0, len(lines) - 1):  # flock: no pip run starts while another is running
        if lines[i].startswith("start"):
            assert lines[i + 1] == "end" + lines[i][len("start"):], lines
    assert (venv / ".ready").is_file() and (venv / ".bundle").read_text().strip() == str(bundle)
    assert sum(out.count("creating the venv") for out in outputs) == 1, outputs
