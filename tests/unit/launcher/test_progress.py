"""Reading a run's progress: tolerant of missing, partial and damaged metrics files (one line, never a
traceback), the runtime's own progress line parsed back, ETA arithmetic by hand, and the CLI on registry rows."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from mudpuppy.launcher import progress
from mudpuppy.launcher.registry import Registry

pytestmark = pytest.mark.timeout(120)


def _rows(n: int, total: int, t0: float = 1000.0, dt: float = 2.0) -> list[dict]:
    return [{"step": s, "epoch": s / total, "loss": 2.0 - s / 10, "learning_rate": 1e-3, "grad_norm": 0.5,
             "tokens_per_second": 100.0 + s, "max_steps": total, "time": t0 + s * dt} for s in range(1, n + 1)]


def test_summary_and_eta_by_hand() -> None:
    text = "\n".join(json.dumps(r) for r in _rows(5, 20)) + "\n"
    text += json.dumps({"step": 5, "epoch": 0.25, "eval_loss": 1.75, "max_steps": 20, "time": 1011.0}) + "\n"
    p = progress.summarize(progress.parse_metrics(text, "m.jsonl"))
    assert (p.step, p.total, p.loss, p.eval_loss, p.tokens_per_second) == (5, 20, 1.5, 1.75, 105.0)
    # steps 1..5 took 8 s (t 1002 -> 1010): 2 s per step, 15 steps left -> 30 s
    assert p.eta_s == pytest.approx(30.0) and p.problem == ""


def test_a_resumed_attempt_restarts_the_eta_clock() -> None:
    first = _rows(4, 10, t0=0.0, dt=100.0)  # slow first attempt, steps 1..4
    second = [dict(r, time=5000.0 + (r["step"] - 3) * 1.0) for r in _rows(6, 10)[2:]]  # resumed at 3, 1 s/step
    text = "\n".join(json.dumps(r) for r in first[:2] + second)
    p = progress.summarize(progress.parse_metrics(text))
    assert p.step == 6 and p.eta_s == pytest.approx(4.0)  # 4 steps left at the new attempt's 1 s/step


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not_object", "nan", "empty", "binary"])
def test_damaged_files_are_read_as_far_as_they_go(damage: str) -> None:
    good = "\n".join(json.dumps(r) for r in _rows(3, 10))
    text = {
        "truncated": good + '\n{"step": 4, "loss": 1.6, "max_st',
        "garbage": good + "\nnot json at all\n",
        "not_object": good + "\n[1, 2, 3]\n42\n",
        "nan": good + '\n{"step": 4, "loss": NaN, "max_steps": 10}\n',
        "empty": "",
        "binary": good + "\n\x00\xff\xfe garbage \n",
    }[damage]
    p = progress.summarize(progress.parse_metrics(text, "metrics.jsonl"))
    if damage == "empty":
        assert p.step is None and "no training step" in p.problem
        return
    # the NaN step happened (it counts) but its loss is not a number: the loss shown is step 3's
    assert p.step == (4 if damage == "nan" else 3) and p.total == 10 and p.loss == pytest.approx(1.7)
    if damage in ("truncated", "garbage", "not_object", "binary"):
        assert "unreadable line" in p.problem and "\n" not in p.problem


def test_the_runtime_progress_line_parses_back() -> None:
    """The line the runtime prints (its own ProgressCallback) is what `status` reads when no file is reachable."""
    from mudpuppy.runtime.train.callbacks import ProgressCallback

    stream = io.StringIO()
    callback = ProgressCallback(Path("/nonexistent"), stream=stream)
    state = SimpleNamespace(global_step=7, max_steps=40)
    line = callback._line({"step": 7, "loss": 1.234567, "learning_rate": 2e-4, "grad_norm": 0.5,
                           "tokens_per_second": 12345.6}, state, time.monotonic(), True)
    p = progress.from_log_lines(["noise\n", line + "\n", "more noise\n"], "local logs")
    assert (p.step, p.total, p.loss, p.tokens_per_second) == (7, 40, 1.2346, 12346.0)
    assert p.eta_s is not None
    assert progress.from_log_lines(["nothing here"], "x").step is None


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mudpuppy", *args], capture_output=True, text=True, timeout=90,
                          env=env, check=False)


def test_status_and_runs_on_partial_missing_and_unreachable_runs(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    state = tmp_path / "state"
    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(state))
    registry = Registry()
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in _rows(3, 12)) + '\n{"step": 4, "lo')
    host = socket.gethostname()
    partial = registry.create(name="partial", backend="local", bundle_hash="0" * 64, config_path="c.yml",
                              launch=json.dumps({"backend": "modal", "gpus": "H100:2", "nodes": 1}))
    registry.update(partial.id, status="succeeded", output=f"{host}:{out}")
    missing = registry.create(name="missing", backend="local", bundle_hash="0" * 64, config_path="c.yml",
                              launch="{}", parent_id=partial.id)  # a `mudpuppy resume` attempt of partial
    registry.update(missing.id, status="succeeded", output=f"{host}:{tmp_path / 'gone'}")
    remote = registry.create(name="remote", backend="slurm", bundle_hash="0" * 64, config_path="c.yml",
                             launch=json.dumps({"backend": "slurm", "volume": "s3://nowhere-bucket-x/p"}))
    registry.update(remote.id, status="failed", output="login1:/home/u/out", reason="boom")
    env = {**os.environ, "MUDPUPPY_STATE_DIR": str(state), "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}

    shown = _cli("status", "partial", "--json", env=env)
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    data = json.loads(shown.stdout)
    assert (data["step"], data["total_steps"], data["loss"]) == (3, 12, 1.7)
    assert "unreadable line" in data["progress_problem"]
    # H100:2 on Modal for (updated - created) seconds at the table's preemptible $3.9492/GPU-h
    hours = data["elapsed_s"] / 3600 * 2
    assert data["gpu_hours"] == pytest.approx(hours, abs=1e-4) and data["cost_usd"] == pytest.approx(hours * 3.9492,
                                                                                                  abs=0.01)
    human = _cli("status", "missing", env=env)
    assert human.returncode == 0 and "Traceback" not in human.stderr
    assert "progress: - (no metrics.jsonl reachable" in human.stdout
    assert f"continues: {partial.id}" in human.stdout and data["continues"] is None
    far = _cli("status", "remote", "--json", env=env)
    assert far.returncode == 1 and "Traceback" not in far.stderr and json.loads(far.stdout)["step"] is None

    rows = {r["name"]: r for r in map(json.loads, _cli("runs", "--json", env=env).stdout.splitlines())}
    assert rows["partial"]["step"] == 3 and rows["missing"]["step"] is None and rows["remote"]["step"] is None
    table = _cli("runs", env={**env, "COLUMNS": "250"})
    assert table.returncode == 0 and "3/12" in table.stdout and "Traceback" not in table.stderr


def test_a_long_log_is_summarised_from_its_tail(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    rows = _rows(30_000, 40_000, dt=0.5)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert path.stat().st_size > 4 * progress.SUMMARY_TAIL_BYTES
    tail = progress.read_metrics_file(path, progress.SUMMARY_TAIL_BYTES)
    whole = progress.read_metrics_file(path)
    assert tail is not None and whole is not None and tail.skipped == 0  # the cut first line is dropped, not counted
    assert len(tail.records) < len(whole.records) == 30_000
    a, b = progress.summarize(tail, now=1.0), progress.summarize(whole, now=1.0)
    assert (a.step, a.total, a.loss, a.tokens_per_second) == (b.step, b.total, b.loss, b.tokens_per_second)
    assert a.eta_s == pytest.approx(b.eta_s) == pytest.approx(10_000 * 0.5)
    small = progress.read_metrics_file(path, 10 * path.stat().st_size)
    assert small is not None and len(small.records) == 30_000
