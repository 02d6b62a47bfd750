"""Sweeps on the real 2-node SLURM cluster (tests/infra): one job array whose tasks each train their own member
with the real runtime (each member's logged learning rate is the one it was given, and `runs --group` ranks the
members by their eval loss as read from their metrics.jsonl), and a throttled array (``%1``) whose first task is
preempted (USR1 to that task's batch shell) and requeues and resumes alone while the other waits its turn."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mudpuppy.tests.infra.helpers import FAKE, mp, require, runtime_missing
from mudpuppy.tests.infra.services import SlurmCluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
CFG = "examples/tiny-alpaca.yml"
# 3 steps with 2 warmup steps: the last logged learning rate is the configured peak; one eval at the end
FAST = ["--max_steps", "3", "--save_steps", "3", "--logging_steps", "1", "--eval_steps", "3",
        "--val_set_size", "0.05", "--warmup_steps", "2"]


def _slurm(project: Path) -> list[str]:
    return ["--backend", "slurm", "--launch.slurm.workdir", str(project / "shared"),
            "--launch.slurm.python", sys.executable]


def _status(run: str) -> dict:
    return json.loads(mp("status", run, "--json", timeout=60).stdout)


@pytest.mark.slow
def test_array_sweep_trains_each_member_with_its_own_learning_rate(slurm: SlurmCluster, project: Path) -> None:
    require(runtime_missing())
    proc = mp("launch", CFG, *FAST, *_slurm(project), "--sweep", "learning_rate=1e-3,8e-3", "--name", "lrs",
              "--launch.slurm.master_port", "29561", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    group = proc.stdout.strip().splitlines()[-1]
    rows = [json.loads(line) for line in mp("runs", "--group", group, "--json").stdout.splitlines()]
    assert len(rows) == 2 and {r["status"] for r in rows} == {"succeeded"}, rows
    assert sorted(r["learning_rate"] for r in rows) == pytest.approx([1e-3, 8e-3]), rows
    for row in rows:  # each member wrote its own folder under the config's output_dir, read from there
        name = row["name"].removeprefix("lrs-")
        assert row["output"] == f"local:{project}/outputs/tiny-alpaca/{name}", row
        metrics = [json.loads(x) for x in (project / "outputs/tiny-alpaca" / name / "metrics.jsonl").read_text()
                   .splitlines()]
        assert max(m.get("learning_rate", 0) for m in metrics) == pytest.approx(row["learning_rate"])
        assert (project / "outputs/tiny-alpaca" / name / "adapter_model.safetensors").exists()
    # best first: ranked by the final eval loss each member logged
    evals = [r["eval_loss"] for r in rows]
    assert all(e is not None for e in evals) and evals == sorted(evals) and evals[0] != evals[1], rows
    # one array job: task ids ARRAY_0 / ARRAY_1 of the same array, logs per task
    handles = [_status(r["id"])["handle"].rsplit("/", 1)[1] for r in rows]
    assert {h.split("_")[0] for h in handles} == {handles[0].split("_")[0]} and {h.split("_")[1] for h in handles} \
        == {"0", "1"}
    for handle in handles:
        assert "[mudpuppy] sweep task" in (project / "shared/logs" / f"slurm-{handle}.out").read_text()


def test_throttled_array_task_is_preempted_and_requeues_alone(slurm: SlurmCluster, project: Path) -> None:
    proc = mp("launch", CFG, *_slurm(project), "--launch.entrypoint", FAKE, "--sweep", "lora_r=4,8", "--detach",
              "--max-parallel", "1", "--retries", "2", "--launch.env.FAKE_STEPS", "100",
              "--launch.env.FAKE_STEP_S", "0.2")
    assert proc.returncode == 0, proc.stderr
    group = proc.stdout.strip().splitlines()[-1]
    rows = [json.loads(line) for line in mp("runs", "--group", group, "--json").stdout.splitlines()]
    first, second = sorted(rows, key=lambda r: r["name"].endswith("r8"))
    job0 = _status(first["id"])["handle"].rsplit("/", 1)[1]
    job1 = _status(second["id"])["handle"].rsplit("/", 1)[1]
    assert job0.endswith("_0") and job1.endswith("_1")
    array = job0.split("_")[0]
    shown = slurm.run("scontrol", "show", "job", array).stdout
    assert "ArrayTaskThrottle=1" in shown, shown
    log0 = project / "shared/logs" / f"slurm-{job0}.out"
    wait_for(lambda: log0.exists() and "step 3/" in log0.read_text(), 90, 0.5, "task 0 to train")
    assert _status(second["id"])["status"] == "pending", slurm.run("scontrol", "show", "job", "-o", job1).stdout
    assert slurm.run("scancel", "--signal=USR1", "--batch", job0).returncode == 0
    wait_for(lambda: "resumed from step" in log0.read_text(), 90, 0.5, "task 0 to requeue and resume")
    for row in (first, second):
        status = wait_for(lambda r=row: (s := _status(r["id"]))["status"] in ("succeeded", "failed") and s, 180, 1,
                          f"{row['name']} to finish")
        assert status["status"] == "succeeded", status
    assert _status(first["id"])["attempts"] == 2 and _status(second["id"])["attempts"] == 1
    for name in ("r4", "r8"):
        assert (project / "outputs/tiny-alpaca" / name / "final.txt").read_text() == "steps=100 world=1\n"
    log1 = (project / "shared/logs" / f"slurm-{job1}.out").read_text()
    assert "resumed" not in log1 and "requeueing" in log0.read_text()
