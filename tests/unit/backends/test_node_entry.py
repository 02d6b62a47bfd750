from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mudpuppy.launcher.node_entry import exit_code_of
from mudpuppy.tests.infra.services import free_port, wait_for

pytestmark = pytest.mark.timeout(300)

FAKE = "mudpuppy.tests.infra.fake_runtime"


@pytest.mark.parametrize(
    ("codes", "expected"),
    [([75, 75], 75), ([75, -15], 75), ([75, 143], 75), ([75, 137], 75), ([2], 2), ([75, 1], 1), ([1, -15], 1),
     ([-9], 1), ([143, 143], 1), ([2, 75], 1)],
)
def test_exit_code_mapping(codes: list[int], expected: int) -> None:
    assert exit_code_of(codes) == expected


def test_torchrun_keeps_the_requeue_code(tmp_path: Path) -> None:
    """Plain torchrun would exit 1 here; node_entry must hand 75 back to the backend."""
    pkg = tmp_path / "exit75mod.py"
    pkg.write_text("import sys\nsys.exit(75)\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mudpuppy.launcher.node_entry", "--nproc-per-node=2", f"--master-port={free_port()}",
         "--module=exit75mod", "unused-bundle"],
        cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 75, proc.stderr[-2000:]


def _workers(pid: int) -> list[int]:
    from mudpuppy.launcher.node_entry import _children

    return _children(pid)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sender", ["supervisor", "slurm"])
def test_sigterm_with_two_workers_exits_75_after_both_saved(tmp_path: Path, sender: str) -> None:
    """A stop while torchrun runs 2 workers: each saves once and the node exits 75 (torchrun alone gives 143/1).

    ``supervisor``: SIGTERM reaches node_entry only (workers lead their own sessions), which relays it once.
    ``slurm``: like slurmstepd, SIGTERM reaches node_entry and every worker; node_entry must not relay a second
    one, which the runtime (and the fake, which mirrors it) reads as "exit now without saving".
    """
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.yml").write_text("datasets: [{path: data.jsonl}]\noutput_dir: out\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.jsonl").write_text("{}\n" * 3)
    env = {**os.environ, "FAKE_STEPS": "400", "FAKE_STEP_S": "0.05", "MUDPUPPY_WORKDIR": str(work)}
    env.pop("SLURM_STEP_ID", None)
    if sender == "slurm":
        env["SLURM_STEP_ID"] = "0"
    log = tmp_path / "out.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mudpuppy.launcher.node_entry", "--nproc-per-node=2",
             f"--master-port={free_port()}", f"--module={FAKE}", str(bundle)],
            cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for(lambda: log.read_text().count("step 3/") >= 2, 90, 0.2, "both workers at step 3")
        workers = _workers(proc.pid)
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGTERM)
        if sender == "slurm":
            for pid in workers:
                os.kill(pid, signal.SIGTERM)
            time.sleep(0.05)
            for pid in workers:  # srun's relayed copy of the same stop: an echo, not a second request
                os.kill(pid, signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    assert code == 75, text[-3000:]
    assert text.count("saved step") == 2 and "second signal" not in text, text[-3000:]
    assert "node stopped by SIGTERM; node exit 75" in text
    assert sorted(p.name for p in work.glob("fake-ckpt-rank*.txt")) == ["fake-ckpt-rank0.txt", "fake-ckpt-rank1.txt"]


def test_the_runtime_ignores_an_echo_but_not_a_second_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from mudpuppy.runtime.train import signals

    exits: list[int] = []
    monkeypatch.setattr(signals.os, "_exit", exits.append)
    watcher = signals.PreemptionWatcher()
    watcher._handle(signal.SIGTERM, None)
    watcher._handle(signal.SIGTERM, None)  # the same stop, delivered again by SLURM
    assert watcher.requested and exits == []
    watcher._handle(signal.SIGUSR1, None)  # another signal: "now"
    assert exits == [128 + signal.SIGUSR1]
    monkeypatch.setattr(signals, "REPEAT_WINDOW_S", 0.0)
    watcher._handle(signal.SIGTERM, None)  # the same one, after the window: "now"
    assert exits[-1] == 128 + signal.SIGTERM


def test_a_requeue_marker_wins_over_exit_codes_torchrun_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers stopped while exiting 75 are reported as killed (-15); the marker they wrote first keeps the 75."""
    from mudpuppy.launcher.contract import ENV_REQUEUE_MARKERS, mark_requeue
    from mudpuppy.launcher.node_entry import exit_code_of, requeue_if_saved

    lost = exit_code_of([-15, -15])
    assert lost != 75
    assert requeue_if_saved(lost, tmp_path) == lost  # no marker: a real kill stays a kill
    monkeypatch.setenv(ENV_REQUEUE_MARKERS, str(tmp_path))
    mark_requeue(1)
    assert requeue_if_saved(lost, tmp_path) == 75
    assert requeue_if_saved(0, tmp_path) == 0  # a finished run stays finished
    monkeypatch.delenv(ENV_REQUEUE_MARKERS)
    mark_requeue(0)  # outside a node launcher: nothing to write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank1"]
