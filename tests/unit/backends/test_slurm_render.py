"""Golden tests of the rendered sbatch script for a matrix of resource options, plus state mapping.

Regenerate the golden files after an intended change with ``MUDPUPPY_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mudpuppy.backends.base import State
from mudpuppy.backends.slurm import _from_scontrol, map_state, materialize
from mudpuppy.launcher.config.schema.launch import LaunchSection
from mudpuppy.launcher.errors import UserError

pytestmark = pytest.mark.timeout(300)

GOLDEN = Path(__file__).parent / "golden"
DIGEST = "0123456789abcdef" * 4
W = "/shared/mp"

MATRIX: dict[str, dict] = {
    "cpu_one_node": {"slurm": {"workdir": W}},
    "h100x8_two_nodes": {
        "gpus": "H100:8", "nodes": 2, "retries": 5, "name": "llama-sft",
        "slurm": {"workdir": W, "partition": "gpu", "account": "ml", "qos": "high", "time": "2-00:00:00",
                  "constraint": "h100&ib", "exclusive": True, "python": "/opt/venv/bin/python"},
    },
    "extras_mem_cpus_env": {
        "gpus": "4", "cpus": 32, "memory": "256G", "env": {"NCCL_DEBUG": "INFO", "WANDB_MODE": "offline"},
        "volume": "s3://bucket/runs",
        "slurm": {"workdir": W, "extra_directives": ["--reservation=big run", "--comment=x;y"],
                  "master_port": 29600, "nproc_per_node": 2},
    },
    "no_signal_no_retries": {"retries": 0, "slurm": {"workdir": W, "signal_seconds": 0, "mem": "8G", "time": "30"}},
    "venv_from_image_spec": {"nodes": 2, "cpus": 4, "slurm": {"workdir": W}},
    "pyxis_whole_node": {
        "gpus": "h100:8", "nodes": 2, "image": "nvcr.io/nvidia/pytorch:25.01-py3",
        "slurm": {"workdir": W, "whole_node": True, "container_args": ["--container-remap-root"]},
    },
    "apptainer_count_only": {
        "gpus": "A100-80GB:4", "image": "/shared/images/mudpuppy.sif",
        "slurm": {"workdir": W, "container": "apptainer", "gpu_type": False, "container_python": "/opt/py/bin/python"},
    },
}
IMAGE = {"schema": 1, "python": "3.11", "packages": ["torch==2.13.0", "transformers==4.57.0"],
         "wheel": "wheels/mudpuppy-0.1.0-py3-none-any.whl"}


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_sbatch_golden(case: str) -> None:
    launch = LaunchSection.model_validate({"backend": "slurm", **MATRIX[case]})
    image = IMAGE if case == "venv_from_image_spec" else None
    text = materialize(launch, "20250101-000000-abcd", "0123456789abcdef.tar.gz", DIGEST, image=image)
    golden = GOLDEN / f"{case}.sbatch"
    if os.environ.get("MUDPUPPY_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
    assert subprocess.run(["bash", "-n", "-c", text], check=False).returncode == 0


def test_render_is_pure() -> None:
    launch = LaunchSection.model_validate({"backend": "slurm", **MATRIX["h100x8_two_nodes"]})
    assert materialize(launch, "r", "b.tar.gz", DIGEST) == materialize(launch, "r", "b.tar.gz", DIGEST)


def test_hostile_values_are_quoted() -> None:
    launch = LaunchSection.model_validate({"slurm": {"workdir": W, "partition": "gpu; rm -rf /"}})
    text = materialize(launch, "r", "b.tar.gz", DIGEST)
    assert "#SBATCH '--partition=gpu; rm -rf /'" in text


def test_home_workdir_needs_the_home_folder() -> None:
    with pytest.raises(UserError, match="starts with '~'"):
        materialize(LaunchSection(), "r", "b.tar.gz", DIGEST)
    text = materialize(LaunchSection(), "r", "b.tar.gz", DIGEST, home="/home/ada")
    assert "#SBATCH --output=/home/ada/.mudpuppy/logs/slurm-%j.out" in text and "~" not in text


def test_whole_node_conflicts_with_an_explicit_memory() -> None:
    launch = LaunchSection.model_validate({"memory": "64G", "slurm": {"workdir": W, "whole_node": True}})
    with pytest.raises(UserError, match="whole_node"):
        materialize(launch, "r", "b.tar.gz", DIGEST)


@pytest.mark.parametrize(
    ("native", "state"),
    [("PENDING", State.PENDING), ("REQUEUED", State.PENDING), ("RUNNING", State.RUNNING),
     ("COMPLETING", State.RUNNING), ("COMPLETED", State.SUCCEEDED), ("CANCELLED by 0", State.CANCELLED),
     ("CANCELLED+", State.CANCELLED), ("FAILED", State.FAILED), ("TIMEOUT", State.FAILED),
     ("NODE_FAIL", State.FAILED), ("OUT_OF_MEMORY", State.FAILED), ("WHATEVER", State.UNKNOWN), ("", State.UNKNOWN)],
)
def test_state_mapping(native: str, state: State) -> None:
    assert map_state(native) == state


def test_scontrol_parse_preempted_exhausted() -> None:
    line = ("JobId=7 JobName=mp-r UserId=root(0) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) "
            "Requeue=1 Restarts=3 BatchFlag=1 ExitCode=75:0 RunTime=00:00:09")
    status = _from_scontrol(line, retries=3)
    assert status.state == State.FAILED and status.exit_code == 75 and status.attempts == 4
    assert status.reason is not None and "retries=3" in status.reason


def test_scontrol_parse_running() -> None:
    status = _from_scontrol("JobId=8 JobState=RUNNING Reason=None Restarts=0 ExitCode=0:0", retries=1)
    assert (status.state, status.reason, status.attempts) == (State.RUNNING, None, 1)
