"""The ray backend against a real local Ray cluster (head on 127.0.0.2, 2 CPU workers, gloo).

One cluster for the module and two jobs in all, because start-up dominates on small machines: the first job
has a Train worker SIGKILLed after its first checkpoint reached Ray's storage and must finish from it; the
second is cancelled while running. Status, logs and cancel go through the same dispatch functions as the CLI.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray.train")

from mudpuppy.backends.base import State  # noqa: E402
from mudpuppy.launcher import dispatch  # noqa: E402
from mudpuppy.launcher.registry import Registry, RunRecord, new_run_id  # noqa: E402
from tests.infra.ray import RayCluster, ray_cluster, ray_env  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]
EXAMPLES = Path(__file__).resolve().parents[2] / "templates" / "examples"
MAX_STEPS = 30  # long enough (~20 s of steps) to kill a worker between the first checkpoint and the end


@pytest.fixture(scope="module")
def cluster() -> RayCluster:
    with ray_cluster(num_cpus=4) as running:
        yield running


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster: RayCluster) -> Path:
    for key, value in ray_env().items():
        if key.startswith("RAY_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MUDPUPPY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_config(folder: Path, *, max_steps: int, retries: int, data: Path | None = None) -> Path:
    cfg = yaml.safe_load((EXAMPLES / "tiny-alpaca.yml").read_text())
    cfg.update({
        "base_model": str(EXAMPLES / "tiny-llama"),
        "datasets": [{"path": str(data or EXAMPLES / "data" / "alpaca_tiny.jsonl"), "type": "alpaca"}],
        "val_set_size": 0, "sequence_len": 128, "micro_batch_size": 2, "gradient_accumulation_steps": 1,
        "max_steps": max_steps, "save_steps": 2, "logging_steps": 1, "warmup_steps": 0,
        "dataloader_num_workers": 0,
        "launch": {"backend": "ray", "retries": retries, "env": {"OMP_NUM_THREADS": "1"},
                   "ray": {"num_workers": 2, "storage_path": str(folder / "storage"), "workdir": str(folder / "work")}},
    })
    path = folder / "tiny-ray.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def launch(config: Path, registry: Registry) -> RunRecord:
    prepared = dispatch.prepare(str(config), {}, new_run_id())
    return dispatch.submit(prepared, str(config), registry)


def wait_for(predicate, timeout: float, what: str, poll: float = 1.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def train_worker_pids(root_pid: int) -> list[int]:
    """Ray Train worker processes under our head process (Ray sets their title to ray::RayTrainWorker...)."""
    parents: dict[int, int] = {}
    titles: dict[int, bytes] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[1])
                titles[int(entry.name)] = (entry / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue

    def under_root(pid: int) -> bool:
        seen = 0
        while pid > 1 and seen < 50:
            if pid == root_pid:
                return True
            pid, seen = parents.get(pid, 0), seen + 1
        return False

    return [pid for pid, title in titles.items() if b"RayTrainWorker" in title and under_root(pid)]


def test_run_survives_a_killed_worker_and_finishes(workspace: Path, cluster: RayCluster) -> None:
    registry = Registry()
    config = write_config(workspace, max_steps=MAX_STEPS, retries=2)
    record = launch(config, registry)
    assert record.handle and record.handle.startswith(f"ray://{cluster.address}/mudpuppy-{record.id}")
    run_storage = workspace / "storage" / record.id

    snapshot = run_storage / "checkpoint_manager_snapshot.json"

    def registered_checkpoint():  # type: ignore[no-untyped-def]
        """A checkpoint Ray has registered (its manager snapshot names it), not merely one copied to storage."""
        if snapshot.is_file():
            latest = (json.loads(snapshot.read_text()).get("latest_checkpoint_result") or {})
            if latest.get("checkpoint_dir_name"):
                return latest["checkpoint_dir_name"]
        if dispatch.refresh(record, registry)[1].state.terminal:
            raise AssertionError("".join(dispatch.iter_logs(record, follow=False))[-4000:])
        return None

    registered = wait_for(registered_checkpoint, 420, "Ray to register the first checkpoint", poll=0.5)
    assert (run_storage / registered / "mudpuppy-manifest.json").is_file()
    record, status = dispatch.refresh(record, registry)
    assert status.state == State.RUNNING
    victims = train_worker_pids(cluster.proc.pid)
    assert len(victims) == 2, victims
    os.kill(victims[-1], signal.SIGKILL)
    print(f"killed Ray Train worker {victims[-1]} after Ray registered {registered}")

    def finished():  # type: ignore[no-untyped-def]
        nonlocal record
        record, status = dispatch.refresh(record, registry)
        return status if status.state.terminal else None

    status = wait_for(finished, 420, "the run to finish", poll=2)
    logs = "".join(dispatch.iter_logs(record, follow=False))
    print(logs)  # shown by pytest when an assertion below fails
    assert status.state == State.SUCCEEDED, logs[-4000:]
    restored = [int(line.split("restored checkpoint-")[1].split()[0]) for line in logs.splitlines()
                if "restored checkpoint-" in line]
    # the restarted group resumed from Ray's checkpoint (the registered one or a later one), not from zero
    assert restored and min(restored) >= int(registered.split("-")[1]), logs[-4000:]
    final = run_storage / "final"
    assert (final / "mudpuppy-final.json").is_file()
    assert (final / "adapter_model.safetensors").is_file() or any(final.glob("adapter_model.*")), list(final.iterdir())
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in (final / "metrics.jsonl").read_text().splitlines()
             if '"loss"' in line]
    assert steps[-1] == MAX_STEPS
    assert registry.get(record.id).status == State.SUCCEEDED.value
    # following a finished job's logs ends by itself
    assert "done" in "".join(dispatch.iter_logs(record, follow=True))


def test_cancel_stops_a_running_job(workspace: Path, cluster: RayCluster) -> None:
    registry = Registry()
    record = launch(write_config(workspace, max_steps=10_000, retries=0), registry)

    def running():  # type: ignore[no-untyped-def]
        return dispatch.refresh(record, registry)[1].state == State.RUNNING

    wait_for(running, 120, "the job to start")
    dispatch.cancel(record, registry)
    backend, handle = dispatch.backend_for(record)
    wait_for(lambda: backend.status(handle).state == State.CANCELLED, 60, "Ray to stop the job")
    assert registry.get(record.id).status == State.CANCELLED.value


def test_user_error_fails_after_one_attempt(workspace: Path, cluster: RayCluster) -> None:
    """A bad data row (found by the runtime, exit 2) with retries: 2 must not start the worker group again."""
    registry = Registry()
    bad = workspace / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"output": "no instruction"}\n')
    record = launch(write_config(workspace, max_steps=4, retries=2, data=bad), registry)

    def finished():  # type: ignore[no-untyped-def]
        status = dispatch.refresh(record, registry)[1]
        return status if status.state.terminal else None

    status = wait_for(finished, 300, "the bad run to fail", poll=2)
    logs = "".join(dispatch.iter_logs(record, follow=False))
    assert status.state == State.FAILED, logs[-4000:]
    starts = {line for line in logs.splitlines() if "Train worker rank 0 of 2 starting" in line}  # one per pid
    assert len(starts) == 1, logs[-6000:]  # one attempt, although max_failures is 2
    assert status.exit_code == 2, (status, logs[-3000:])
    assert "bad.jsonl: row 1: field 'instruction': is null" in logs, logs[-3000:]
