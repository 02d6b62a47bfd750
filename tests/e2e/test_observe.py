"""Before and during a run, checked on one real tiny run (`mudpuppy launch --backend local`, a file:// volume):

- `estimate` before it: rows (packed sequences), eval rows, optimizer steps and the model's parameter counts equal
  what the runtime itself then prints ("N train rows, M eval rows, S steps, ... T/P params trainable", counted from
  the built torch model);
- `status` and `runs` afterwards show the last step, loss and tokens/s of its metrics.jsonl, also once the output
  folder is gone (read from the volume), and with neither (the progress lines in the local backend's logs);
- `plot` draws exactly the metrics.jsonl's (step, value) pairs, one labelled line per run, into a PNG of the
  stated size.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import REPO, base_config, write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _mp(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mudpuppy", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1", **env}, check=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("observe")
    volume = work / "volume"
    cfg = base_config(work / "out", max_steps=None, num_epochs=1, val_set_size=0.1, eval_steps=3, save_steps=100,
                      launch={"volume": f"file://{volume}"})
    path = write_config(work / "observe.yml", cfg)
    env = {"MUDPUPPY_STATE_DIR": str(work / "state")}
    estimate = _mp("estimate", str(path), "--json", env=env)
    assert estimate.returncode == 0, estimate.stderr[-3000:]
    launched = _mp("launch", str(path), "--backend", "local", "--name", "tiny-observe", env=env)
    assert launched.returncode == 0, launched.stderr[-3000:] + launched.stdout[-3000:]
    return {"work": work, "out": work / "out", "volume": volume, "env": env, "cfg": path,
            "estimate": json.loads(estimate.stdout), "log": launched.stdout}


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_estimate_matches_what_the_runtime_then_did(run: dict[str, Any]) -> None:
    said = re.search(r"(\d+) train rows, (\d+) eval rows, (\d+) steps, .*?([\d,]+)/([\d,]+) params trainable",
                     run["log"])
    assert said, run["log"][-2000:]
    rows, eval_rows, steps, trainable, total = (int(g.replace(",", "")) for g in said.groups())
    estimate = run["estimate"]
    assert estimate["data"]["batches_rows"] == rows  # packed sequences: what the trainer batches
    assert eval_rows > 0 and estimate["data"]["eval_rows"] >= eval_rows  # rows; the runtime packs its eval set
    assert estimate["steps"]["total"] == steps
    assert estimate["shape"]  # read from the tiny model's config.json
    assert estimate["lora"] == trainable
    from mudpuppy.launcher.estimate import ModelShape

    shape = ModelShape(**{k: v for k, v in estimate["shape"].items()})
    assert shape.total_params == total - trainable  # torch counts the LoRA adapters in the model's parameters
    metrics = [r for r in _records(run["out"] / "metrics.jsonl") if "loss" in r]
    assert metrics[-1]["step"] == steps == metrics[-1]["max_steps"]


def test_status_and_runs_show_the_metrics_then_read_the_volume(run: dict[str, Any]) -> None:
    metrics = [r for r in _records(run["out"] / "metrics.jsonl") if "loss" in r]
    last = metrics[-1]
    status = _mp("status", "tiny-observe", "--json", env=run["env"])
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert (data["step"], data["total_steps"], data["loss"]) == (last["step"], last["max_steps"], last["loss"])
    assert data["tokens_per_second"] == last["tokens_per_second"] and data["attempts"] == 1
    assert data["progress_source"] == str(run["out"] / "metrics.jsonl")
    human = _mp("status", "tiny-observe", env=run["env"]).stdout
    assert f"progress: {last['step']}/{last['max_steps']}" in human and f"loss: {last['loss']:.4f}" in human
    rows = [json.loads(line) for line in _mp("runs", "--json", env=run["env"]).stdout.splitlines()]
    assert [(r["name"], r["step"], r["loss"]) for r in rows] == [("tiny-observe", last["step"], last["loss"])]

    moved = run["work"] / "out-moved"
    shutil.move(run["out"], moved)  # the output folder is gone from here: the volume still answers
    try:
        data = json.loads(_mp("status", "tiny-observe", "--json", env=run["env"]).stdout)
        assert data["progress_source"] == str(run["volume"] / "metrics.jsonl")
        assert (data["step"], data["loss"]) == (last["step"], last["loss"])
        # neither folder reachable: the runtime's progress lines in the backend's logs still answer
        volume_moved = run["work"] / "volume-moved"
        shutil.move(run["volume"], volume_moved)
        try:
            data = json.loads(_mp("status", "tiny-observe", "--json", env=run["env"]).stdout)
            assert data["progress_source"] == "local logs"
            assert (data["step"], data["total_steps"]) == (last["step"], last["max_steps"])
            assert data["loss"] == round(last["loss"], 4)  # the log line prints 4 decimals
        finally:
            shutil.move(volume_moved, run["volume"])
    finally:
        shutil.move(moved, run["out"])


def test_plot_draws_exactly_the_logged_values(run: dict[str, Any], tmp_path: Path) -> None:
    from PIL import Image

    from mudpuppy.launcher import progress, progress_plot
    from mudpuppy.launcher.registry import Registry

    os.environ["MUDPUPPY_STATE_DIR"] = run["env"]["MUDPUPPY_STATE_DIR"]
    try:
        record = Registry().get("tiny-observe")
    finally:
        del os.environ["MUDPUPPY_STATE_DIR"]
    mine = progress.newest_metrics(record)
    other = progress.read_metrics_file(run["volume"] / "metrics.jsonl")
    assert mine is not None and other is not None
    fig = progress_plot.figure([("tiny-observe", mine), ("volume copy", other)])
    written = _records(run["out"] / "metrics.jsonl")
    for ax, (key, _title) in zip(fig.axes, progress_plot.PANELS, strict=True):
        expected = [(r["step"], r[key]) for r in written if isinstance(r.get(key), int | float)]
        assert expected, key  # every panel's metric was logged by the real run
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == ["tiny-observe", "volume copy"]
        for line in lines:
            assert list(zip(line.get_xdata(), line.get_ydata(), strict=True)) == expected, key

    target = tmp_path / "curves.png"
    proc = _mp("plot", "tiny-observe", str(run["volume"]), "--out", str(target), env=run["env"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(target)
    with Image.open(target) as image:
        assert image.format == "PNG"
        assert image.size == (int(progress_plot.SIZE_INCHES[0] * progress_plot.DPI),
                              int(progress_plot.SIZE_INCHES[1] * progress_plot.DPI))
    missing = _mp("plot", "no-such-run", env=run["env"])
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "no run" in missing.stderr
