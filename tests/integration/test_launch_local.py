"""The local backend end to end with the stand-in runtime: run, logs, status, preemption restart, cancel,
secrets, flag overrides and dry runs. Real processes; no services."""

from __future__ import annotations

import gzip
import json
import os
import signal
import time
from pathlib import Path

import pytest

from mudpuppy.tests.infra.helpers import FAKE, mp, one_line_error
from mudpuppy.tests.infra.services import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
SECRET = "hf_local_secret_4f9a8b7c6d"
CFG = "examples/tiny-alpaca.yml"


def _fake(**env: str) -> list[str]:
    args = ["--launch.entrypoint", FAKE]
    for key, value in env.items():
        args += [f"--launch.env.{key}", value]
    return args


def _status(run: str) -> dict:
    proc = mp("status", run, "--json", timeout=60)
    return json.loads(proc.stdout)


def test_run_logs_status_and_no_secret_anywhere(project: Path) -> None:
    env = {"HF_TOKEN": SECRET}
    dry = mp("launch", CFG, "--dry-run", "--launch.secrets", "[HF_TOKEN]", *_fake(), env=env)
    assert dry.returncode == 0 and "node_entry" in dry.stdout and "HF_TOKEN" in dry.stdout
    assert not (project / "state" / "runs.sqlite").exists() or "dry" not in dry.stdout  # dry run: no row
    proc = mp("launch", CFG, "--launch.secrets", "[HF_TOKEN]", "--name", "loc", *_fake(), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "fake runtime: step 5/5" in proc.stdout and "secret True" in proc.stdout and "rows 240" in proc.stdout
    status = _status("loc")
    assert status["status"] == "succeeded" and status["attempts"] == 1 and status["backend"] == "local"
    run_dir = project / "state" / "runs" / status["id"]
    # a relative output_dir lands where `launch` ran, as with `mudpuppy train`; the run folder keeps the logs
    assert (project / "outputs/tiny-alpaca/final.txt").read_text() == "steps=5 world=1\n"
    assert not (run_dir / "outputs").exists() and (run_dir / "output.log").is_file()
    assert status["output"].endswith(f"{project}/outputs/tiny-alpaca")
    assert f"outputs go to {status['output']}" in proc.stderr
    logs = mp("logs", "loc")
    assert "fake runtime: done" in logs.stdout
    # the secret reached the job's environment and nothing on disk
    assert SECRET not in dry.stdout and SECRET not in proc.stdout
    for path in (project / "state").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if path.name.endswith(".tar.gz"):
                data = gzip.decompress(data)
            assert SECRET.encode() not in data, path
    relaunch = mp("launch", CFG, "--launch.secrets", "[HF_TOKEN]", "--detach", *_fake(), env=env)
    assert "reused" in relaunch.stderr


def test_preempted_run_restarts_and_resumes_then_cancel(project: Path) -> None:
    proc = mp("launch", CFG, "--detach", "--name", "pre", *_fake(FAKE_STEPS="30", FAKE_STEP_S="0.1"))
    assert proc.returncode == 0, proc.stderr
    run = proc.stdout.strip()
    run_dir = project / "state" / "runs" / run
    wait_for(lambda: "step 3/" in (run_dir / "output.log").read_text(), 30, 0.1, "step 3")
    os.kill(int((run_dir / "supervisor.pid").read_text()), signal.SIGUSR1)  # a preemption notice
    wait_for(lambda: _status(run)["status"] in ("succeeded", "failed"), 60, 0.5, "the run to finish")
    status = _status(run)
    log = mp("logs", run).stdout
    assert status["status"] == "succeeded" and status["attempts"] == 2 and status["restarts"] == 1, log
    assert "attempts: 2" in mp("status", run).stdout  # the human view shows them too, from the registry
    assert "saved step" in log and "resumed from step" in log and "preempted (exit 75)" in log

    long = mp("launch", CFG, "--detach", *_fake(FAKE_STEPS="1000", FAKE_STEP_S="0.2"))
    run = long.stdout.strip()
    run_dir = project / "state" / "runs" / run
    wait_for(lambda: "step 1/" in (run_dir / "output.log").read_text(), 30, 0.1, "step 1")
    assert _status(run)["status"] == "running"
    child = json.loads((run_dir / "state.json").read_text())["child_pid"]
    assert mp("cancel", run).returncode == 0
    assert _status(run)["status"] == "cancelled"
    time.sleep(0.5)
    assert not Path(f"/proc/{child}").exists()
    assert mp("runs").returncode == 0  # the rich table renders
    rows = {r["id"]: r for r in map(json.loads, mp("runs", "--json").stdout.splitlines())}
    assert rows[run]["status"] == "cancelled" and rows[run]["reason"] == "cancelled by user"


def test_flags_override_the_launch_section_and_errors_are_one_line(project: Path) -> None:
    dry = mp("launch", CFG, "--dry-run", "--backend", "slurm", "--nodes", "2", "--gpus", "H100:8",
             "--launch.slurm.workdir", "/shared/mp", "--launch.slurm.partition", "gpu", "--retries", "7")
    assert dry.returncode == 0, dry.stderr
    for text in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=H100:8", "#SBATCH --partition=gpu", "retries=7"):
        assert text in dry.stdout
    assert not (project / "state" / "runs.sqlite").exists()
    assert "local backend runs on one machine" in one_line_error(mp("launch", CFG, "--nodes", "2"))
    assert "launch.ssh.hosts is empty" in one_line_error(mp("launch", CFG, "--backend", "ssh"))
    assert "unknown key" in one_line_error(mp("launch", CFG, "--launch.slurm.partitoin", "x", "--dry-run"))
    assert "no run" in one_line_error(mp("status", "does-not-exist"))
