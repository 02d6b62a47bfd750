"""The completion marker and the start-up check, against real folders and a real file:// volume (no training).

The end-to-end relaunches (train twice, launch --backend local with a volume) are in
tests/e2e/test_reproducibility.py; this pins the rules: which files the marker vouches for, what makes it not
count, that the volume answers when the local copy is gone, and what the one line says.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mudpuppy.launcher.config import load_config_text
from mudpuppy.runtime.checkpoints.completion import find_completion, local_completion, mark_complete
from mudpuppy.runtime.checkpoints.sync import OUTPUTS_MANIFEST, upload_outputs
from mudpuppy.runtime.checkpoints.volume import open_volume
from tests.unit.volume.helpers import make_checkpoint

pytestmark = pytest.mark.timeout(60)
BASE = "base_model: m\nlearning_rate: 1e-4\ndatasets:\n  - path: d.jsonl\n    type: alpaca\n"


def finished_run(out: Path) -> Path:
    make_checkpoint(out, 6)
    (out / ".staging").mkdir(parents=True)
    (out / ".staging" / "half.bin").write_bytes(b"x")
    (out / "adapter_model.safetensors").write_bytes(b"a" * 1000)
    (out / "adapter_config.json").write_text("{}")
    (out / "metrics.jsonl").write_text('{"step": 6, "loss": 1.0}\n')
    return out


def config(out: Path, volume: str | None = None):
    text = BASE + f"output_dir: {out}\n" + (f"launch:\n  volume: {volume}\n" if volume else "")
    return load_config_text(text).config


def test_marker_lists_final_outputs_only_and_counts_only_while_they_are_intact(tmp_path: Path) -> None:
    out = finished_run(tmp_path / "out")
    assert local_completion(out) is None  # no marker yet: a run killed while saving is not finished
    manifest = mark_complete(out, 6)
    assert sorted(f.path for f in manifest.files) == ["adapter_config.json", "adapter_model.safetensors",
                                                       "metrics.jsonl"]
    found = local_completion(out)
    assert found is not None and found.manifest.step == 6 and not found.on_volume

    (out / "adapter_model.safetensors").write_bytes(b"a" * 999)  # truncated
    assert local_completion(out) is None
    (out / "adapter_model.safetensors").unlink()
    assert local_completion(out) is None
    (out / "adapter_model.safetensors").write_bytes(b"a" * 1000)
    assert local_completion(out) is not None
    (out / OUTPUTS_MANIFEST).write_text('{"step": 6, "files": [')  # torn: never trusted
    assert local_completion(out) is None


def test_the_volume_answers_when_the_local_copy_is_gone(tmp_path: Path) -> None:
    out = finished_run(tmp_path / "out")
    url = f"file://{tmp_path / 'vol'}"
    volume = open_volume(url)
    cfg = config(out, url)
    assert find_completion(cfg, out, environ={}) is None  # nothing anywhere yet

    upload_outputs(volume, out, step=6)  # what VolumeSync.finish does, before the local marker is written
    for path in sorted(out.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    found = find_completion(cfg, out, environ={})
    assert found is not None and found.on_volume and found.location == url
    assert not any(out.iterdir())  # reading only: nothing was downloaded

    # MUDPUPPY_VOLUME (set by backends) wins over launch.volume, as in VolumeSyncCallback
    assert find_completion(cfg, out, environ={"MUDPUPPY_VOLUME": f"file://{tmp_path / 'other'}"}) is None
    assert find_completion(config(out), out, environ={"MUDPUPPY_VOLUME": url}) is not None

    listed = json.loads(volume.read_text(OUTPUTS_MANIFEST) or "{}")["files"]
    volume.remove(listed[0]["path"])  # an upload that never finished
    assert find_completion(cfg, out, environ={}) is None


def test_the_one_line_says_where_and_how_to_train_again(tmp_path: Path) -> None:
    out = finished_run(tmp_path / "out")
    mark_complete(out, 6)
    found = local_completion(out)
    assert found is not None
    line = found.line(out, None)
    assert "\n" not in line
    assert line.startswith("run already complete at step 6: outputs in " + str(out))
    assert f"delete {out}, or set a new output_dir" in line
    with_volume = found.line(out, "s3://b/run")
    assert f"delete {out} and s3://b/run, or set a new output_dir and launch.volume" in with_volume

