"""The slurm backend against a real 2-node cluster (slurmctld + 2 slurmd + munged, tests/infra): a 2-node job
preempted mid-run that requeues itself and resumes, cancel, an unknown partition, and submission through a
login node over SSH. The stand-in runtime keeps each job to seconds; the real runtime is in test_e2e_runtime."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mudpuppy.tests.infra.helpers import FAKE, mp, one_line_error
from mudpuppy.tests.infra.services import SlurmCluster, start_sshd, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(360)]
CFG = "examples/tiny-alpaca.yml"
SECRET = "hf_slurm_secret_5e6f7a8b"


def slurm_args(project: Path) -> list[str]:
    return [
        "--backend", "slurm",
        "--launch.slurm.workdir", str(project / "shared"),
        "--launch.slurm.python", sys.executable,
        "--launch.slurm.master_port", "29541",
        "--launch.entrypoint", FAKE,
    ]


def _status(run: str) -> dict:
    return json.loads(mp("status", run, "--json", timeout=60).stdout)


def _log(project: Path, run: str) -> str:
    return mp("logs", run).stdout


def test_two_node_job_preempted_requeues_and_resumes(slurm: SlurmCluster, project: Path) -> None:
    proc = mp("launch", CFG, *slurm_args(project), "--nodes", "2", "--detach", "--retries", "2", "--name", "two",
              "--launch.env.FAKE_STEPS", "40", "--launch.env.FAKE_STEP_S", "0.2")
    assert proc.returncode == 0, proc.stderr
    run = proc.stdout.strip()
    job = _status(run)["handle"].rsplit("/", 1)[1]
    wait_for(lambda: _log(project, run).count("step 3/") >= 2, 60, 0.5, "both ranks at step 3")
    # a preemption notice exactly as --signal=B:USR1@N delivers it: to the batch shell only
    assert slurm.run("scancel", "--signal=USR1", "--batch", job).returncode == 0
    wait_for(lambda: _log(project, run).count("resumed from step") >= 2, 60, 0.5, "both ranks to resume")
    # then a requeue decided by SLURM itself (SIGTERM to every task; the script must not requeue again)
    assert slurm.run("scontrol", "requeue", job).returncode == 0
    status = wait_for(lambda: (s := _status(run))["status"] in ("succeeded", "failed", "cancelled") and s, 120, 1,
                      "the requeued job to finish")
    log = _log(project, run)
    summary = "\n".join(line for line in log.splitlines() if "/40 loss" not in line)
    assert status["status"] == "succeeded", summary
    assert status["attempts"] == 3 and status["restarts"] == 2 and status["native"] == "COMPLETED", summary
    assert "attempts: 3" in mp("status", run).stdout
    assert "preemption notice" in log and log.count("requeueing (restart") == 1, summary  # ours, once
    assert "node stopped by SIGTERM" in log and "Traceback" not in log, summary  # SLURM's requeue
    assert "rank 0/2" in log and "rank 1/2" in log and "node 1" in log
    assert log.count("resumed from step") == 4  # both ranks resumed after each restart
    run_dir = project / "shared" / "runs" / run
    assert (run_dir / "outputs/tiny-alpaca/final.txt").read_text() == "steps=40 world=2\n"


def test_cancel_and_unknown_partition(slurm: SlurmCluster, project: Path) -> None:
    proc = mp("launch", CFG, *slurm_args(project), "--detach", "--launch.env.FAKE_STEPS", "1000")
    assert proc.returncode == 0, proc.stderr
    run = proc.stdout.strip()
    wait_for(lambda: "step 1/" in _log(project, run), 60, 0.5, "the job to run")
    assert _status(run)["status"] == "running"
    job = _status(run)["handle"].rsplit("/", 1)[1]
    assert mp("cancel", run).returncode == 0
    assert _status(run)["status"] == "cancelled"
    wait_for(lambda: "JobState=CANCELLED" in slurm.run("scontrol", "show", "job", job).stdout, 60, 0.5,
             "SLURM to show the job CANCELLED")

    err = one_line_error(mp("launch", CFG, *slurm_args(project), "--launch.slurm.partition", "nosuch",
                            "--name", "badpart"))
    assert "sbatch on this machine refused the job" in err and "partition" in err
    rows = [json.loads(line) for line in mp("runs", "--json").stdout.splitlines()]
    bad = next(r for r in rows if r["name"] == "badpart")
    assert bad["status"] == "failed" and "partition" in bad["reason"]


def test_submit_through_a_login_node(slurm: SlurmCluster, project: Path) -> None:
    pytest.importorskip("fabric")
    login = start_sshd(set_env=slurm.env)  # a login node whose shells know the cluster
    try:
        proc = mp("launch", CFG, *slurm_args(project), "--name", "vialogin", "--launch.secrets", "[HF_TOKEN]",
                  "--launch.slurm.login", login.host,
                  "--launch.ssh.key_file", str(login.key_file),
                  "--launch.ssh.known_hosts", str(login.known_hosts), env={"HF_TOKEN": SECRET})
        assert proc.returncode == 0, proc.stderr
        assert "fake runtime: done" in proc.stdout and "secret True" in proc.stdout
        for path in (project / "shared").rglob("*"):
            if path.is_file() and not path.name.endswith(".tar.gz"):
                assert SECRET.encode() not in path.read_bytes(), path
        status = _status("vialogin")
        assert status["status"] == "succeeded" and status["handle"].startswith(f"slurm://{login.host}/")
    finally:
        login.stop()
