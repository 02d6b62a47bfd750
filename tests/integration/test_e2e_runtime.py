"""End to end with the real runtime (``python -m mudpuppy.runtime``) on the tiny example: over SSH, on a
2-node SLURM job, and a SLURM job requeued mid-run (``scontrol requeue``) that must finish with the same
weights as the uninterrupted SSH run of the same bundle."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mudpuppy.tests.infra.helpers import mp, require, runtime_missing
from mudpuppy.tests.infra.services import SlurmCluster, Sshd, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]
CFG = "examples/tiny-alpaca.yml"
# few steps, a checkpoint every 2, no eval: each run takes seconds of compute
FAST = ["--max_steps", "12", "--save_steps", "2", "--logging_steps", "1", "--val_set_size", "0"]


@pytest.fixture(autouse=True)
def _runtime() -> None:
    require(runtime_missing())


def _status(run: str) -> dict:
    return json.loads(mp("status", run, "--json", timeout=60).stdout)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _slurm(project: Path) -> list[str]:
    return ["--backend", "slurm", "--launch.slurm.workdir", str(project / "shared"),
            "--launch.slurm.python", sys.executable, "--launch.slurm.master_port", "29551"]


def test_ssh_then_slurm_requeued_run_gives_the_same_weights(sshd: Sshd, slurm: SlurmCluster, project: Path) -> None:
    import torch

    ssh = mp("launch", CFG, *FAST, "--backend", "ssh", "--name", "e2e-ssh",
             "--launch.ssh.hosts", f"[{sshd.host}]", "--launch.ssh.key_file", str(sshd.key_file),
             "--launch.ssh.known_hosts", str(sshd.known_hosts), "--launch.ssh.python", sys.executable,
             "--launch.ssh.workdir", str(project / "remote"), timeout=600)
    assert ssh.returncode == 0, ssh.stderr[-3000:] + ssh.stdout[-3000:]
    assert "step 12/12" in ssh.stdout and "loss" in ssh.stdout
    status = _status("e2e-ssh")
    assert status["status"] == "succeeded"
    baseline = project / "remote" / "runs" / status["id"] / "node0" / "outputs" / "tiny-alpaca"
    assert (baseline / "adapter_model.safetensors").is_file()

    proc = mp("launch", CFG, *FAST, *_slurm(project), "--detach", "--name", "e2e-requeue")
    assert proc.returncode == 0, proc.stderr
    run = proc.stdout.strip()
    job = _status(run)["handle"].rsplit("/", 1)[1]
    out = project / "shared" / "logs" / f"slurm-{job}.out"  # read directly: the CLI is too slow to poll
    wait_for(lambda: out.exists() and "step 2/12" in out.read_text(), 300, 0.1, "training to pass step 2")
    assert slurm.run("scontrol", "requeue", job).returncode == 0
    status = wait_for(lambda: (s := _status(run))["status"] in ("succeeded", "failed", "cancelled") and s, 400, 2,
                      "the requeued run to finish")
    log = mp("logs", run).stdout
    assert status["status"] == "succeeded" and status["attempts"] == 2, log[-4000:]
    assert "exiting 75" in log and "resuming from" in log and "step 12/12" in log, log[-4000:]
    resumed = project / "shared" / "runs" / run / "outputs" / "tiny-alpaca"
    ours, theirs = _weights(resumed), _weights(baseline)
    assert ours.keys() == theirs.keys() and ours
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=1e-6, msg=name)


def test_two_node_slurm_run(slurm: SlurmCluster, project: Path) -> None:
    proc = mp("launch", CFG, *FAST, *_slurm(project), "--nodes", "2", "--name", "e2e-2n", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    status = _status("e2e-2n")
    log = mp("logs", "e2e-2n").stdout
    assert status["status"] == "succeeded", log[-3000:]
    assert "step 12/12" in log and "on n[1-2]" in log
    out = project / "shared" / "runs" / status["id"] / "outputs" / "tiny-alpaca"
    assert (out / "adapter_model.safetensors").is_file()
