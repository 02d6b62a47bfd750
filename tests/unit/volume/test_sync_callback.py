"""The trainer callback: restores on creation, uploads on save, drains at train end, finishes outputs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from mudpuppy.launcher.contract import ENV_VOLUME
from mudpuppy.runtime.checkpoints.manifest import MANIFEST_NAME
from mudpuppy.runtime.checkpoints.sync import remote_checkpoints, upload_checkpoint
from mudpuppy.runtime.checkpoints.sync_callback import VolumeSyncCallback
from mudpuppy.runtime.checkpoints.volume import open_volume
from mudpuppy.tests.unit.volume.helpers import make_checkpoint

pytestmark = pytest.mark.timeout(300)


def _cfg(volume: str | None = None, options: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(launch=SimpleNamespace(volume=volume, options=options or {}), save_total_limit=2)


def test_no_volume_is_inert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VOLUME, raising=False)
    cb = VolumeSyncCallback.for_run(_cfg(), tmp_path / "out")
    assert cb.sync is None
    cb.on_save(
        SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(is_world_process_zero=True, global_step=1), None
    )
    cb.finish()


def test_non_main_rank_is_inert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VOLUME, f"file://{tmp_path}/vol")
    assert VolumeSyncCallback.for_run(_cfg(), tmp_path / "out", is_main=False).sync is None


def test_callback_lifecycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VOLUME, raising=False)
    vol = open_volume(f"file://{tmp_path}/vol")
    for step in (2, 4):
        upload_checkpoint(vol, make_checkpoint(tmp_path / "earlier", step))
    out = tmp_path / "out"
    cb = VolumeSyncCallback.for_run(_cfg(f"file://{tmp_path}/vol"), out)  # launch.volume as the fallback
    assert cb.restored == out / "checkpoint-4" and (out / "checkpoint-4" / MANIFEST_NAME).is_file()

    args = SimpleNamespace(output_dir=str(out))
    for step in (6, 8):
        make_checkpoint(out, step)
        cb.on_save(args, SimpleNamespace(is_world_process_zero=True, global_step=step), None)
    cb.on_train_end(args, SimpleNamespace(), None)
    assert [c.step for c in remote_checkpoints(vol) if c.complete] == [6, 8], "save_total_limit=2 on the volume"
    (out / "adapter_model.safetensors").write_bytes(b"w")
    cb.finish()
    assert vol.read_text("adapter_model.safetensors") == "w"
    assert not cb.sync.uploader._thread.is_alive()  # type: ignore[union-attr]


def test_save_without_manifest_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VOLUME, f"file://{tmp_path}/vol")
    out = tmp_path / "out"
    cb = VolumeSyncCallback.for_run(_cfg(), out)
    (out / "checkpoint-3").mkdir(parents=True)
    cb.on_save(SimpleNamespace(output_dir=str(out)), SimpleNamespace(is_world_process_zero=True, global_step=3), None)
    cb.on_train_end(None, None, None)
    cb.close()
    assert remote_checkpoints(cb.sync.volume) == []  # type: ignore[union-attr]
