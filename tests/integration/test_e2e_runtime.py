"""End to end with the real runtime (``python -m mudpuppy.runtime``) on the tiny example: local (a relative
output_dir lands where `launch` ran), over SSH, and a 2-node
SLURM run preempted by SLURM itself (a higher-priority job) that must finish with the same weights as an
uninterrupted 2-node run of the same config. ``scontrol requeue`` and USR1 notices are covered with the stand-in
runtime in test_launch_slurm (seconds per job)."""

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


def test_ssh_run(sshd: Sshd, project: Path) -> None:
    ssh = mp("launch", CFG, *FAST, "--backend", "ssh", "--name", "e2e-ssh",
             "--launch.ssh.hosts", f"[{sshd.host}]", "--launch.ssh.key_file", str(sshd.key_file),
             "--launch.ssh.known_hosts", str(sshd.known_hosts), "--launch.ssh.python", sys.executable,
             "--launch.ssh.workdir", str(project / "remote"), "--output_dir", str(project / "out-ssh"), timeout=600)
    assert ssh.returncode == 0, ssh.stderr[-3000:] + ssh.stdout[-3000:]
    assert "step 12/12" in ssh.stdout and "loss" in ssh.stdout
    assert _status("e2e-ssh")["status"] == "succeeded"
    assert (project / "out-ssh" / "adapter_model.safetensors").is_file()


def test_two_node_run_preempted_by_slurm_matches_the_uninterrupted_run(slurm: SlurmCluster, project: Path) -> None:
    """The README's claim as stated: a 2-node run of the real runtime, preempted by SLURM itself (a job in the
    higher-priority partition ``high`` needs both nodes; ``debug`` has PreemptMode=REQUEUE and a GraceTime, and
    preempt_send_user_signal delivers our --signal=B:USR1 at once), requeued, resumed, and its final weights equal
    to an uninterrupted 2-node run of the same config."""
    import torch

    base_out, preempted_out = project / "out-2n", project / "out-2n-preempted"
    proc = mp("launch", CFG, *FAST, *_slurm(project), "--nodes", "2", "--name", "e2e-2n",
              "--output_dir", str(base_out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    status = _status("e2e-2n")
    log = mp("logs", "e2e-2n").stdout
    assert status["status"] == "succeeded" and status["attempts"] == 1, log[-3000:]
    assert "step 12/12" in log and "on n[1-2]" in log

    proc = mp("launch", CFG, *FAST, *_slurm(project), "--nodes", "2", "--detach", "--name", "e2e-preempt",
              "--output_dir", str(preempted_out))
    assert proc.returncode == 0, proc.stderr
    run = proc.stdout.strip()
    job = _status(run)["handle"].rsplit("/", 1)[1]
    out = project / "shared" / "logs" / f"slurm-{job}.out"  # read directly: the CLI is too slow to poll
    wait_for(lambda: out.exists() and "step 2/12" in out.read_text(), 300, 0.1, "training to pass step 2")
    vip = slurm.run("sbatch", "--parsable", "--partition=high", "--nodes=2", "--job-name=vip",
                    f"--output={project}/vip.out", "--wrap", "echo vip ran on $SLURM_JOB_NODELIST; sleep 2")
    assert vip.returncode == 0, vip.stderr
    vip_id = vip.stdout.strip().split(";")[0]
    status = wait_for(lambda: (s := _status(run))["status"] in ("succeeded", "failed", "cancelled") and s, 400, 2,
                      "the preempted run to finish")
    log = mp("logs", run).stdout
    assert status["status"] == "succeeded" and status["attempts"] == 2, log[-4000:]
    # the test sent no signal: the notice is SLURM's (preempt_send_user_signal), and the run saved in the grace time
    assert "preemption notice" in log and "exiting 75" in log, log[-4000:]
    assert "resuming from" in log and "step 12/12" in log and log.count("on n[1-2]") == 2, log[-4000:]
    assert "JobState=COMPLETED" in slurm.run("scontrol", "show", "job", vip_id).stdout  # the VIP job did run
    assert "vip ran on n[1-2]" in (project / "vip.out").read_text()
    ours, theirs = _weights(preempted_out), _weights(base_out)
    assert ours.keys() == theirs.keys() and ours
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=1e-6, msg=name)


def test_local_launch_writes_a_relative_output_dir_where_train_would(project: Path) -> None:
    """`launch --backend local` with `output_dir: ./out` writes ./out in the folder it ran in, like `mudpuppy train`
    with the same config (not under the run folder in the state dir)."""
    short = ["--max_steps", "2", "--save_steps", "2", "--val_set_size", "0"]
    proc = mp("launch", CFG, *short, "--name", "e2e-local", "--output_dir", "./out", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert "outputs go to" in proc.stderr and f"{project}/out" in proc.stderr
    assert (project / "out" / "adapter_model.safetensors").is_file()
    run_dir = project / "state" / "runs" / _status("e2e-local")["id"]
    assert run_dir.is_dir() and not (run_dir / "out").exists()
