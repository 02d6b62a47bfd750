"""A bit flipped in the newest checkpoint's weights: a new process resumes from the previous verified checkpoint and
ends bitwise where an uninterrupted run (its own process) ends; with nothing verified left it refuses (exit 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mudpuppy.launcher.contract import EXIT_USER_ERROR
from mudpuppy.runtime.checkpoints.manifest import MANIFEST_NAME
from tests.e2e.conftest import base_config, run_runtime, write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

WEIGHTS = "adapter_model.safetensors"


def steps_and_losses(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def flip_high_bit_of_last_weight(path: Path) -> None:
    """Same size, one bit: the top byte of the last float32 (tensor data, not the safetensors header)."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run in its own process (checkpoints at steps 2, 4, 6), shared by the tests below."""
    folder = tmp_path_factory.mktemp("whole")
    cfg_path = write_config(folder / "whole.yml", base_config(folder / "out"))
    done = run_runtime([str(cfg_path)])
    assert done.returncode == 0, done.stderr[-2000:]
    return folder / "out"


def assert_same_result(out: Path, whole_out: Path) -> None:
    import torch
    from safetensors.torch import load_file

    assert [s for s, _ in steps_and_losses(out)] == [3, 4, 5, 6]  # resumed after step 2, not 0 or 4
    assert steps_and_losses(out) == steps_and_losses(whole_out)[2:]
    a, b = load_file(str(whole_out / WEIGHTS)), load_file(str(out / WEIGHTS))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_bit_flipped_newest_checkpoint_resumes_from_previous_and_matches_uninterrupted(
    tiny_cfg, uninterrupted: Path
) -> None:
    whole_out = uninterrupted

    # The interrupted run: it had saved checkpoint-2 and checkpoint-4 when its machine went away; then a bit of
    # checkpoint-4's weights flipped on disk (same size, manifest untouched).
    split_path, split = tiny_cfg("split", auto_resume_from_checkpoints=True)
    out = Path(split["output_dir"])
    for step in (2, 4):
        shutil.copytree(whole_out / f"checkpoint-{step}", out / f"checkpoint-{step}")
    flip_high_bit_of_last_weight(out / "checkpoint-4" / WEIGHTS)
    damaged = (out / "checkpoint-4" / WEIGHTS).read_bytes()

    resumed = run_runtime([str(split_path)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    warnings = [line for line in resumed.stderr.splitlines() if "failed verification" in line]
    assert len(warnings) == 1, resumed.stderr[-2000:]
    assert f"checkpoint-4/{WEIGHTS}" in warnings[0] and "resuming from checkpoint-2 instead" in warnings[0]
    assert f"resuming from {out / 'checkpoint-2'}" in resumed.stdout
    assert_same_result(out, whole_out)
    kept = [p for p in out.iterdir() if p.name.startswith(".checkpoint-4.corrupt-")]
    assert len(kept) == 1 and (kept[0] / WEIGHTS).read_bytes() == damaged


def test_nothing_verified_left_refuses_with_one_line_and_keeps_the_files(tiny_cfg, tmp_path: Path) -> None:
    cfg_path, cfg = tiny_cfg("broken", auto_resume_from_checkpoints=True)
    out = Path(cfg["output_dir"])
    ckpt = out / "checkpoint-2"
    ckpt.mkdir(parents=True)
    (ckpt / WEIGHTS).write_bytes(b"\0" * 64)
    (ckpt / MANIFEST_NAME).write_text('{"step": 2, "files": [{"path": "adapter')  # truncated manifest
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    refused = run_runtime([str(cfg_path)])
    assert refused.returncode == EXIT_USER_ERROR, refused.stderr[-2000:]
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert f"{ckpt / MANIFEST_NAME}: truncated or unreadable manifest" in errors[0]
    assert "refusing to train from step 0" in errors[0]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_bit_flip_on_the_volume_resumes_from_the_previous_volume_checkpoint(
    tiny_cfg, uninterrupted: Path, tmp_path: Path
) -> None:
    """The machine is gone; only the volume (file://) holds checkpoint-2 and a damaged checkpoint-4."""
    volume = tmp_path / "volume"
    for step in (2, 4):
        shutil.copytree(uninterrupted / f"checkpoint-{step}", volume / f"checkpoint-{step}")
    (volume / "latest").write_text("checkpoint-4\n")
    flip_high_bit_of_last_weight(volume / "checkpoint-4" / WEIGHTS)

    cfg_path, cfg = tiny_cfg("fresh-machine", launch={"volume": f"file://{volume}"})
    out = Path(cfg["output_dir"])
    resumed = run_runtime([str(cfg_path)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    warnings = [line for line in resumed.stderr.splitlines() if "corrupt" in line]
    assert len(warnings) == 1 and "checkpoint-4" in warnings[0] and WEIGHTS in warnings[0], resumed.stderr[-2000:]
    assert f"resuming from {out / 'checkpoint-2'}" in resumed.stdout
    assert_same_result(out, uninterrupted)
