"""Which files each Ray Train worker reports for a checkpoint: Ray V2 merges the per-worker uploads of one step,
so a sharded checkpoint is whole in storage only if every node's leader sends its node's shards."""

from __future__ import annotations

from pathlib import Path

import pytest

from mudpuppy.launcher.ray_entry import MANIFEST, upload_folder

pytestmark = pytest.mark.timeout(30)


def write(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_text(name)


def test_rank0_reports_the_published_checkpoint_only_once_its_manifest_is_there(tmp_path: Path) -> None:
    write(tmp_path / "checkpoint-4", ["__0_0.distcp", "trainer_state.json"])
    assert upload_folder(tmp_path, 4, rank=0, local_rank=0) is None
    (tmp_path / "checkpoint-4" / MANIFEST).write_text("{}")
    assert upload_folder(tmp_path, 4, rank=0, local_rank=0) == tmp_path / "checkpoint-4"
    assert upload_folder(tmp_path, 4, rank=1, local_rank=1) is None  # same node as rank 0


def test_other_node_leader_reports_its_staged_shards(tmp_path: Path) -> None:
    write(tmp_path / ".staging" / "checkpoint-4", ["__2_0.distcp", "__3_0.distcp", "trainer_state.json"])
    folder = upload_folder(tmp_path, 4, rank=2, local_rank=0)
    assert folder is not None and folder.parent == tmp_path and folder.name.startswith(".ray-upload-")
    assert sorted(p.name for p in folder.iterdir()) == ["__2_0.distcp", "__3_0.distcp", "trainer_state.json"]
    assert (folder / "__2_0.distcp").stat().st_ino == (tmp_path / ".staging/checkpoint-4/__2_0.distcp").stat().st_ino
    assert upload_folder(tmp_path, 4, rank=3, local_rank=1) is None
    assert upload_folder(tmp_path, 8, rank=2, local_rank=0) is None  # nothing for that step on this node


def test_other_node_with_save_on_each_node_never_sends_its_manifest(tmp_path: Path) -> None:
    write(tmp_path / "checkpoint-4", ["__2_0.distcp", MANIFEST])
    folder = upload_folder(tmp_path, 4, rank=2, local_rank=0)
    assert folder is not None and sorted(p.name for p in folder.iterdir()) == ["__2_0.distcp"]
    assert (tmp_path / "checkpoint-4" / MANIFEST).is_file()
