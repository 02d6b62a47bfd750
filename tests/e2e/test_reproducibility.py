"""Same seed, same bits; a finished run stays finished. Every claim compares independently started processes.

Five tiny trainings share the work (each costs seconds of imports on CI's 2 cores). The base model is a folder
with saved random weights, loaded with ``from_pretrained``: unlike ``reinit_weights`` (which seeds torch right
before building the model), only ``seed`` applied before peft builds the adapter makes the LoRA init repeatable
there (without it A and C differed from step 3 on and the adapters by up to 0.24).

    A  `mudpuppy train`, lora_dropout 0.1, prepared-dataset cache MISS, uninterrupted
    C  `python -m mudpuppy.runtime`, same config, cache HIT, SIGTERM after step 3 (exit 75), then resumed;
       then its final outputs are deleted (as if lost after the last checkpoint) and it is relaunched
    E  `mudpuppy train`, lora_dropout 0, cache HIT
    F  `mudpuppy launch --backend local` with a file:// volume, lora_dropout 0 (the bundle's cache: a MISS)

A == C and E == F bitwise (sha256 of adapter_model.safetensors, every logged loss). Then A is trained again
(no volume) and F is launched again, once with its output_dir and once after deleting it (the volume must
answer): each prints one "run already complete" line, exits 0 and changes no file (hash and mtime).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mudpuppy.launcher.contract import EXIT_OK, EXIT_REQUEUE
from tests.e2e.conftest import REPO, base_config, run_runtime, write_config
from tests.e2e.test_resume_and_signals import KILL_AT_STEP

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
COMPLETE = "run already complete"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fixtures.tiny import build_tiny_model_with_weights

    root = tmp_path_factory.mktemp("repro")
    build_tiny_model_with_weights(root / "model", seed=3)
    return root


def _config(work: Path, name: str, **overrides: Any) -> tuple[Path, Path]:
    cfg = base_config(work / name, base_model=str(work / "model"), reinit_weights=None,
                      dataset_prepared_path=str(work / "prepared"), **overrides)
    return write_config(work / f"{name}.yml", cfg), Path(cfg["output_dir"])


def _mudpuppy(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mudpuppy", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _losses(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def _max_abs_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    return max(float((x[k] - y[k]).abs().max()) for k in x)


def _assert_same_run(a: Path, b: Path) -> None:
    assert _losses(a) == _losses(b), (_losses(a), _losses(b))
    assert [s for s, _ in _losses(a)] == [1, 2, 3, 4, 5, 6]
    digest_a, digest_b = _sha256(a / "adapter_model.safetensors"), _sha256(b / "adapter_model.safetensors")
    assert digest_a == digest_b, f"adapters differ: max abs difference {_max_abs_diff(a, b)}"


def _snapshot(*roots: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``roots`` -> (sha256, mtime_ns): what an idle relaunch must leave exactly as it was."""
    return {str(p): (_sha256(p), p.stat().st_mtime_ns) for root in roots for p in sorted(root.rglob("*"))
            if p.is_file()}


def _one_complete_line(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if COMPLETE in line]
    assert len(lines) == 1, stdout[-3000:]
    assert not re.search(r"^step \d+/", stdout, re.M), stdout[-3000:]  # no training step was logged
    return lines[0]


def test_same_seed_gives_the_same_bits_and_a_finished_run_stays_finished(work: Path) -> None:
    # A: `mudpuppy train`, dropout on, the cache is written by this run (a miss)
    a_cfg, a_out = _config(work, "a", lora_dropout=0.1)
    a = _mudpuppy("train", str(a_cfg))
    assert a.returncode == 0, a.stderr[-3000:]
    assert any((work / "prepared").iterdir())

    # C: same config, another entry point, a cache hit, preempted after step 3 and resumed
    c_cfg, c_out = _config(work, "c", lora_dropout=0.1, auto_resume_from_checkpoints=True)
    first = run_runtime([str(c_cfg)], env={"KILL_AT": "3"}, prelude=KILL_AT_STEP, timeout=300)
    assert first.returncode == EXIT_REQUEUE, first.stderr[-3000:]
    assert not (c_out / "adapter_model.safetensors").exists()
    second = run_runtime([str(c_cfg)], timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stdout
    _assert_same_run(a_out, c_out)

    # C's final outputs lost after its last checkpoint: the relaunch resumes checkpoint-6 and trains no step 7/6
    (c_out / "mudpuppy-outputs.json").unlink()
    (c_out / "adapter_model.safetensors").unlink()
    third = run_runtime([str(c_cfg)], timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "checkpoint-6 is at step 6, the last one" in third.stdout, third.stdout[-3000:]
    assert not re.search(r"^step \d+/", third.stdout, re.M), third.stdout[-3000:]
    _assert_same_run(a_out, c_out)
    assert (c_out / "mudpuppy-outputs.json").is_file()

    # E and F: dropout off; `train` (cache hit) against `launch --backend local` with a volume (its own cache)
    e_cfg, e_out = _config(work, "e", lora_dropout=0.0)
    e = _mudpuppy("train", str(e_cfg))
    assert e.returncode == 0, e.stderr[-3000:]
    volume = work / "volume"
    f_cfg, f_out = _config(work, "f", lora_dropout=0.0, launch={"volume": f"file://{volume}"})
    state = {"MUDPUPPY_STATE_DIR": str(work / "state")}
    f = _mudpuppy("launch", str(f_cfg), "--backend", "local", "--name", "f", env=state)
    assert f.returncode == 0, f.stderr[-3000:] + f.stdout[-3000:]
    _assert_same_run(e_out, f_out)
    assert _sha256(e_out / "adapter_model.safetensors") != _sha256(a_out / "adapter_model.safetensors")
    assert (volume / "adapter_model.safetensors").is_file() and (volume / "mudpuppy-outputs.json").is_file()

    # A again, no volume: one line, exit 0, nothing touched
    before = _snapshot(a_out, work / "prepared")
    again = _mudpuppy("train", str(a_cfg))
    assert again.returncode == EXIT_OK, again.stderr[-3000:]
    line = _one_complete_line(again.stdout)
    assert str(a_out) in line and "new output_dir" in line
    assert _snapshot(a_out, work / "prepared") == before

    # F again with a volume: first its output_dir answers, then (deleted) the volume does
    before = _snapshot(f_out, volume)
    relaunch = _mudpuppy("launch", str(f_cfg), "--backend", "local", env=state)
    assert relaunch.returncode == EXIT_OK, relaunch.stderr[-3000:]
    assert str(f_out) in _one_complete_line(relaunch.stdout)
    assert _snapshot(f_out, volume) == before

    shutil.rmtree(f_out)
    before = _snapshot(volume)
    relaunch = _mudpuppy("launch", str(f_cfg), "--backend", "local", env=state)
    assert relaunch.returncode == EXIT_OK, relaunch.stderr[-3000:]
    line = _one_complete_line(relaunch.stdout)
    assert f"volume file://{volume}" in line and "launch.volume" in line, line
    assert _snapshot(volume) == before
    assert not f_out.exists()
