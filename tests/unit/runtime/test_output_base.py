"""``MUDPUPPY_OUTPUT_BASE``: a backend's way to make a relative ``output_dir`` / ``dataset_prepared_path`` land where
the user launched (as ``mudpuppy train`` does), while data paths keep resolving in the run folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from mudpuppy.launcher.config import load_config
from mudpuppy.launcher.contract import ENV_OUTPUT_BASE
from mudpuppy.runtime.entry import anchor_outputs

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parents[3] / "templates" / "examples"


def _config(tmp_path: Path, **overrides: object):  # type: ignore[no-untyped-def]
    return load_config(str(EXAMPLES / "tiny-alpaca.yml"), dict(overrides)).config


def test_relative_outputs_resolve_against_the_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_OUTPUT_BASE, "/submit/dir")
    cfg = anchor_outputs(_config(tmp_path, output_dir="./out/x", dataset_prepared_path="prep"))
    assert cfg.output_dir == "/submit/dir/out/x" and cfg.dataset_prepared_path == "/submit/dir/prep"
    assert cfg.datasets[0].path == "examples/data/alpaca_tiny.jsonl"  # inputs: untouched (bundle links)


def test_absolute_and_remote_outputs_and_no_base_are_left_alone(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config(tmp_path, output_dir="out")
    assert anchor_outputs(cfg).output_dir == "out"  # no base set: `mudpuppy train` resolves against the cwd
    monkeypatch.setenv(ENV_OUTPUT_BASE, "/submit/dir")
    for value in ("/abs/out", "s3://bucket/out"):
        assert anchor_outputs(_config(tmp_path, output_dir=value)).output_dir == value
    assert anchor_outputs(_config(tmp_path, output_dir="o")).dataset_prepared_path is None
