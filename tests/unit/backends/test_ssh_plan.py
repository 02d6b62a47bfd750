from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mudpuppy.backends.ssh import SSHBackend
from mudpuppy.launcher.bundle import Bundle
from mudpuppy.launcher.config.schema.launch import LaunchSection
from mudpuppy.launcher.errors import UserError

pytestmark = pytest.mark.timeout(300)

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


CONTAINER_MATRIX: dict[str, dict] = {
    "docker_gpu_secret": {"image": "ghcr.io/acme/train:1", "gpus": "H100:2", "secrets": ["HF_TOKEN"],
                          "env": {"WANDB_MODE": "offline"},
                          "ssh": {"hosts": ["u@g1"], "container_args": ["--shm-size=16g"]}},
    "apptainer_two_hosts_cpu": {"image": "/shared/train.sif", "nodes": 2,
                                "ssh": {"hosts": ["g1", "g2"], "container": "apptainer",
                                        "python": "/opt/host/bin/python", "container_python": "/venv/bin/python"}},
}


@pytest.mark.parametrize("case", sorted(CONTAINER_MATRIX))
def test_container_plan_golden(case: str) -> None:
    """The exact command each host runs inside launch.image (regenerate: MUDPUPPY_UPDATE_GOLDEN=1, review diff)."""
    import os

    plan = _plan(**CONTAINER_MATRIX[case])
    golden = Path(__file__).parent / "golden" / f"ssh_{case}.sh"
    if os.environ.get("MUDPUPPY_UPDATE_GOLDEN"):
        golden.write_text(plan.script)
    assert plan.script == golden.read_text()
    for script in plan.extra["host_scripts"].values():
        assert subprocess.run(["bash", "-n", "-c", script], check=False).returncode == 0
        assert "-m venv" not in script  # the image replaces the venv


def test_container_passes_env_by_name_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_value_never_in_a_plan")
    plan = _plan(image="img:1", gpus="2", secrets=["HF_TOKEN"], env={"A": "1"}, ssh={"hosts": ["h"]})
    script = plan.extra["host_scripts"]["h"]
    assert "--env=HF_TOKEN " in script and "--env=A " in script and "--env=MUDPUPPY_ATTEMPT " in script
    assert "hf_value_never_in_a_plan" not in plan.render() and "--gpus=all" in script and "--network=host" in script
    assert "--gpus" not in _plan(image="img:1", ssh={"hosts": ["h"]}).script  # no GPUs asked: none passed
    plain = _plan(ssh={"hosts": ["h"]}).script
    assert "docker" not in plain and "-m venv" in plain


def test_container_without_host_python_or_wheel_is_a_user_error() -> None:
    bare = Bundle(path=Path("/l/abc.tar.gz"), digest="abc" * 20, config_text="", files={}, image={"python": "3.11"})
    backend = SSHBackend(LaunchSection.model_validate({"backend": "ssh", "image": "i", "ssh": {"hosts": ["h"]}}))
    with pytest.raises(UserError, match="launch.ssh.python"):
        backend.plan(bare, "run1")


def test_shared_fs_sends_relative_outputs_to_the_launch_folder(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    backend = SSHBackend(LaunchSection.model_validate({"backend": "ssh", "ssh": {"hosts": ["h"], "shared_fs": True}}))
    plan = backend.plan(BUNDLE, "run1")
    assert f"export MUDPUPPY_OUTPUT_BASE={tmp_path}" in plan.extra["host_scripts"]["h"]
    assert backend.output_location(plan, "./out") == f"h:{tmp_path}/out"
    plain = _plan(ssh={"hosts": ["h"]})  # no shared filesystem: outputs stay in the host's run folder
    assert "MUDPUPPY_OUTPUT_BASE" not in plain.extra["host_scripts"]["h"]
    assert SSHBackend(LaunchSection()).output_location(plain, "out") == "h:~/.mudpuppy/runs/run1/node0/out"
