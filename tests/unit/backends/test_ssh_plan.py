from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mudpuppy.backends.ssh import SSHBackend
from mudpuppy.launcher.bundle import Bundle
from mudpuppy.launcher.config.schema.launch import LaunchSection
from mudpuppy.launcher.errors import UserError

BUNDLE = Bundle(path=Path("/l/abc.tar.gz"), digest="abc" * 20, config_text="", files={},
                image={"python": "3.11", "packages": ["torch==2.13.0"], "wheel": "wheels/m.whl"})


def _plan(**launch: object):
    return SSHBackend(LaunchSection.model_validate({"backend": "ssh", **launch})).plan(BUNDLE, "run1")


def test_two_hosts_get_ranks_and_the_first_host_as_master() -> None:
    plan = _plan(nodes=2, gpus="A100:4", ssh={"hosts": ["u@gpu1", "u@gpu2:2222"], "master_port": 29700})
    first, second = (plan.extra["host_scripts"][h] for h in ("u@gpu1", "u@gpu2:2222"))
    for script, rank in ((first, 0), (second, 1)):
        assert f"--node-rank={rank}" in script and "--master-addr=gpu1" in script
        assert "--nnodes=2" in script and "--nproc-per-node=4" in script and "--master-port=29700" in script
        assert subprocess.run(["bash", "-n", "-c", script], check=False).returncode == 0
    assert '"$HOME"/.mudpuppy/runs/run1/node1' in second
    assert "python -m venv" in first or "-m venv" in first  # no launch.ssh.python: a venv from image.json
    assert plan.session == "u@gpu1,u@gpu2:2222"


def test_existing_python_skips_the_venv() -> None:
    plan = _plan(ssh={"hosts": ["h"], "python": "/opt/py/bin/python"})
    script = plan.extra["host_scripts"]["h"]
    assert "venv" not in script and script.count("/opt/py/bin/python") == 2  # supervisor and node command


def test_host_list_errors() -> None:
    with pytest.raises(UserError, match="hosts is empty"):
        _plan()
    with pytest.raises(UserError, match="lists only 1"):
        _plan(nodes=2, ssh={"hosts": ["h"]})
