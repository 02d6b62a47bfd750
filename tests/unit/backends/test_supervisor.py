"""The supervisor's restart policy, state file and cancel, with real processes (no services)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mudpuppy.backends import supervisor

pytestmark = pytest.mark.timeout(300)

# Exits with the codes listed in CODES, one per attempt (attempt number from MUDPUPPY_ATTEMPT).
SCRIPT = "import os,sys; codes=[int(c) for c in os.environ['CODES'].split(',')]; " \
         "a=int(os.environ['MUDPUPPY_ATTEMPT']); print('attempt', a, flush=True); sys.exit(codes[a])"


def _run(tmp_path: Path, codes: str, retries: int) -> tuple[int, dict]:
    env = {**os.environ, "CODES": codes}
    proc = subprocess.run(
        [sys.executable, "-m", "mudpuppy.backends.supervisor", "start", "--retries", str(retries), str(tmp_path),
         "--", sys.executable, "-c", SCRIPT],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    return proc.returncode, supervisor.read_state(tmp_path)


def test_restarts_on_requeue_code_then_succeeds(tmp_path: Path) -> None:
    code, state = _run(tmp_path, "75,75,0", retries=3)
    assert code == 0 and state["state"] == "succeeded" and state["attempts"] == 3
    log = "".join(supervisor.iter_logs(tmp_path, follow=False))
    assert log == ""  # the caller owns output.log; start without spawn writes to its own stdout


def test_retries_exhausted(tmp_path: Path) -> None:
    code, state = _run(tmp_path, "75,75,75", retries=1)
    assert code == 75 and state["state"] == "failed" and state["attempts"] == 2
    assert "retries=1 exhausted" in state["reason"]


def test_user_error_is_not_retried(tmp_path: Path) -> None:
    code, state = _run(tmp_path, "2,0", retries=3)
    assert code == 2 and state["attempts"] == 1 and "user error" in state["reason"]


def test_crash_is_not_retried(tmp_path: Path) -> None:
    code, state = _run(tmp_path, "1,0", retries=3)
    assert code == 1 and state["state"] == "failed" and state["reason"] == "exit code 1"


def test_detached_cancel_kills_the_group_and_logs_follow(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    script = (f"import os,time; open({str(marker)!r},'w').write(str(os.getpid())); "
              "print('up', flush=True); time.sleep(60)")
    pid = supervisor.start_detached(tmp_path, [sys.executable, "-c", script], 0, sys.executable, dict(os.environ), {})
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert supervisor.read_state(tmp_path)["state"] == "running"
    child = int(marker.read_text())
    assert supervisor.cancel(tmp_path, grace_s=10)
    state = supervisor.read_state(tmp_path)
    assert state["state"] == "cancelled"
    assert not supervisor._alive(child) and not supervisor._alive(pid)
    log = "".join(supervisor.iter_logs(tmp_path, follow=True))  # returns: the run is terminal
    assert "up" in log and "cancelled" in log
    assert not supervisor.cancel(tmp_path)  # nothing left to cancel


def test_dead_supervisor_reads_as_failed(tmp_path: Path) -> None:
    supervisor.write_state(tmp_path, state="running", attempts=1, supervisor_pid=2**22 + 12345)
    state = supervisor.read_state(tmp_path)
    assert state["state"] == "failed" and "died" in state["reason"]
