"""When does a run pick up its newest checkpoint without being told? Whenever losing it would surprise a user."""

from __future__ import annotations

from pathlib import Path

import pytest

from mudpuppy.launcher.config import load_config_text
from mudpuppy.runtime.checkpoints.manifest import write_manifest
from mudpuppy.runtime.train.run import resume_checkpoint

pytestmark = pytest.mark.timeout(300)

BASE = "base_model: m\nlearning_rate: 1e-4\ndatasets:\n  - path: d.jsonl\n    type: alpaca\n"


def checkpoint(output_dir: Path, step: int, complete: bool = True) -> Path:
    path = output_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "weights.bin").write_bytes(b"w" * step)
    if complete:
        write_manifest(path, step)
    return path


@pytest.mark.parametrize(
    ("extra", "environ", "resumes"),
    [
        ("", {}, False),  # a plain local run starts fresh, as in Axolotl
        ("", {"MUDPUPPY_RUN_ID": "r1"}, True),  # launched by a backend: a restart must continue
        ("", {"MUDPUPPY_VOLUME": "file:///vol"}, True),  # checkpoints kept on a volume are meant to be resumed
        ("launch:\n  volume: s3://bucket/runs\n", {}, True),
        ("auto_resume_from_checkpoints: false\n", {"MUDPUPPY_RUN_ID": "r1"}, False),  # an explicit no wins
        ("auto_resume_from_checkpoints: true\n", {}, True),
    ],
)
def test_auto_resume_default(tmp_path: Path, extra: str, environ: dict[str, str], resumes: bool) -> None:
    checkpoint(tmp_path, 2)
    newest = checkpoint(tmp_path, 4)
    checkpoint(tmp_path, 6, complete=False)  # a save that died half-way never counts
    cfg = load_config_text(BASE + extra).config
    assert resume_checkpoint(cfg, tmp_path, environ) == (newest if resumes else None)


def test_explicit_resume_path_must_be_complete(tmp_path: Path) -> None:
    from mudpuppy.launcher.errors import UserError

    partial = checkpoint(tmp_path, 6, complete=False)
    cfg = load_config_text(BASE + f"resume_from_checkpoint: {partial}\n").config
    with pytest.raises(UserError, match="not a complete checkpoint"):
        resume_checkpoint(cfg, tmp_path, {})
