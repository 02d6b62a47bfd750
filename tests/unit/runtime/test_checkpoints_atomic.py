from pathlib import Path

import pytest

from mudpuppy.runtime.checkpoints.atomic import publish, rotate, staging_root
from mudpuppy.runtime.checkpoints.manifest import complete_checkpoints, latest_complete_checkpoint, verify

pytestmark = pytest.mark.timeout(300)


def stage(out: Path, step: int, payload: bytes = b"w") -> Path:
    d = staging_root(out) / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(payload * step)
    return d


def test_publish_moves_into_place_and_writes_manifest_last(tmp_path):
    final = publish(stage(tmp_path, 3), tmp_path, 3)
    assert final == tmp_path / "checkpoint-3" and verify(final, checksums=True)
    assert not (staging_root(tmp_path) / "checkpoint-3").exists()


def test_staged_or_manifestless_checkpoints_are_invisible(tmp_path):
    publish(stage(tmp_path, 2), tmp_path, 2)
    stage(tmp_path, 4)  # crashed mid-save: still in staging
    (tmp_path / "checkpoint-6").mkdir()  # crashed between rename and manifest
    assert latest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-2"


def test_publish_replaces_an_incomplete_leftover_of_the_same_step(tmp_path):
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-5" / "junk").write_text("x")
    final = publish(stage(tmp_path, 5), tmp_path, 5)
    assert not (final / "junk").exists() and verify(final)


def test_rotate_keeps_limit_newest_and_best_and_clears_old_debris(tmp_path):
    for step in (1, 2, 3, 4):
        publish(stage(tmp_path, step), tmp_path, step)
    (tmp_path / "checkpoint-0").mkdir()  # debris older than the newest complete one
    removed = rotate(tmp_path, 2, keep=tmp_path / "checkpoint-1")
    names = [p.name for p in complete_checkpoints(tmp_path)]
    assert names == ["checkpoint-1", "checkpoint-4"]
    assert tmp_path / "checkpoint-0" in removed and not (tmp_path / "checkpoint-0").exists()


def test_rotate_limit_one_never_deletes_the_newest(tmp_path):
    for step in (1, 2):
        publish(stage(tmp_path, step), tmp_path, step)
    (tmp_path / "checkpoint-9").mkdir()  # newer but incomplete: must not count as newest
    rotate(tmp_path, 1)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-2"]
    assert (tmp_path / "checkpoint-9").exists()  # newer debris may be a save in progress
