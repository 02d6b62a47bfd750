"""Checkpoint sync against real stores: a local directory (file://) and moto's S3 server on loopback."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from mudpuppy.launcher.contract import ENV_VOLUME
from mudpuppy.runtime.checkpoints.manifest import MANIFEST_NAME, verify
from mudpuppy.runtime.checkpoints.sync import (
    LATEST_NAME,
    OUTPUTS_MANIFEST,
    SNAPSHOT_DIR,
    VolumeSync,
    apply_retention,
    remote_checkpoints,
    restore_latest,
    upload_checkpoint,
)
from mudpuppy.runtime.checkpoints.volume import Volume, open_volume
from mudpuppy.tests.infra.s3 import S3Server, s3_server  # noqa: F401  (fixture)
from mudpuppy.tests.unit.volume.helpers import RecordingVolume, make_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture(params=["file", "s3"])
def volume(request: pytest.FixtureRequest, tmp_path: Path) -> Volume:
    if request.param == "file":
        return open_volume(f"file://{tmp_path}/volume/run-1")
    server: S3Server = request.getfixturevalue("s3_server")
    return open_volume(f"s3://{server.bucket()}/runs/run-1", server.storage_options)


def _steps(volume: Volume, *, complete: bool = True) -> list[int]:
    return [c.step for c in remote_checkpoints(volume) if c.complete or not complete]


def _corrupt(volume: Volume, rel: str) -> None:
    """Same size, different bytes: only a sha256 check can notice."""
    data = bytearray(volume.fs.cat_file(volume.path(rel)))
    data[0] ^= 0xFF
    volume.fs.pipe_file(volume.path(rel), bytes(data))
    volume.invalidate()


def test_upload_writes_files_then_manifest_then_latest(volume: Volume, tmp_path: Path) -> None:
    rec = RecordingVolume(volume)
    ckpt = make_checkpoint(tmp_path / "out", 10)
    upload_checkpoint(rec, ckpt)
    writes = [rel for _, rel in rec.events]
    assert writes[-2:] == [f"checkpoint-10/{MANIFEST_NAME}", LATEST_NAME]
    assert set(writes[:-2]) == {"checkpoint-10/model.safetensors", "checkpoint-10/sub/trainer_state.json"}
    assert volume.read_text(LATEST_NAME) == "checkpoint-10\n"
    assert _steps(volume) == [10]


def test_interrupted_upload_is_never_complete(volume: Volume, tmp_path: Path) -> None:
    rec = RecordingVolume(volume)
    upload_checkpoint(rec, make_checkpoint(tmp_path / "out", 1))
    rec.fail_after_puts = 1  # dies after the first file of checkpoint-2
    with pytest.raises(OSError, match="mid-upload"):
        upload_checkpoint(rec, make_checkpoint(tmp_path / "out", 2))
    found = remote_checkpoints(volume)
    assert [(c.step, c.complete) for c in found] == [(1, True), (2, False)]
    assert "no manifest" in found[1].problem
    assert volume.read_text(LATEST_NAME) == "checkpoint-1\n"


def test_restore_picks_newest_verified(volume: Volume, tmp_path: Path) -> None:
    src = tmp_path / "a"
    for step in (1, 2, 3):
        upload_checkpoint(volume, make_checkpoint(src, step))
    fresh = tmp_path / "b"
    got = restore_latest(volume, fresh)
    assert got == fresh / "checkpoint-3" and verify(got, checksums=True)
    assert (got / "model.safetensors").read_bytes() == (src / "checkpoint-3" / "model.safetensors").read_bytes()
    assert [p.name for p in fresh.iterdir()] == ["checkpoint-3"], "only the newest is pulled, no temp dirs left"


def test_restore_keeps_newer_local_checkpoint(volume: Volume, tmp_path: Path) -> None:
    out = tmp_path / "out"
    upload_checkpoint(volume, make_checkpoint(tmp_path / "other", 2))
    local = make_checkpoint(out, 5)
    assert restore_latest(volume, out) == local
    assert not (out / "checkpoint-2").exists()


def test_restore_replaces_partial_local_copy(volume: Volume, tmp_path: Path) -> None:
    upload_checkpoint(volume, make_checkpoint(tmp_path / "src", 4))
    out = tmp_path / "out"
    make_checkpoint(out, 3)
    partial = out / "checkpoint-4"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"torn")  # killed mid-save: no manifest
    assert restore_latest(volume, out) == partial
    assert verify(partial, checksums=True)


def test_corrupt_newest_falls_back_with_warning(
    volume: Volume, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "src"
    for step in (1, 2):
        upload_checkpoint(volume, make_checkpoint(src, step))
    _corrupt(volume, "checkpoint-2/model.safetensors")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        got = restore_latest(volume, out)
    assert got == out / "checkpoint-1" and verify(got, checksums=True)
    assert "checkpoint-2" in caplog.text and "corrupt" in caplog.text and "sha256" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-1"], "the corrupt download was removed"


def test_partial_newest_falls_back_with_warning(
    volume: Volume, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "src"
    upload_checkpoint(volume, make_checkpoint(src, 1))
    upload_checkpoint(volume, make_checkpoint(src, 2))
    volume.remove(f"checkpoint-2/{MANIFEST_NAME}")
    upload_checkpoint(volume, make_checkpoint(src, 3))
    volume.remove("checkpoint-3/model.safetensors")  # manifest present, file missing
    with caplog.at_level(logging.WARNING):
        got = restore_latest(volume, tmp_path / "out")
    assert got is not None and got.name == "checkpoint-1"
    assert "checkpoint-3" in caplog.text and "missing" in caplog.text
    assert "checkpoint-2" in caplog.text and "no manifest" in caplog.text


def test_restore_from_empty_volume(volume: Volume, tmp_path: Path) -> None:
    assert restore_latest(volume, tmp_path / "out") is None


def test_retention_keeps_limit_and_newest_verified(volume: Volume, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for step in (1, 2, 3, 4):
        upload_checkpoint(volume, make_checkpoint(src, step))
    # A killed upload older than the newest complete one is garbage; a newer one is left alone.
    volume.remove(f"checkpoint-2/{MANIFEST_NAME}")
    upload_checkpoint(volume, make_checkpoint(src, 5))
    volume.remove(f"checkpoint-5/{MANIFEST_NAME}")
    deleted = apply_retention(volume, 2)
    assert sorted(deleted) == ["checkpoint-1", "checkpoint-2"]
    assert _steps(volume, complete=False) == [3, 4, 5]
    assert _steps(volume) == [3, 4]
    # limit 1 with the newest verified checkpoint protected: nothing newer-but-broken may push it out.
    apply_retention(volume, 1, protect=4)
    assert _steps(volume) == [4]
    assert not any(rel.startswith("checkpoint-3/") for rel in volume.sizes())


def test_volume_sync_end_to_end(volume: Volume, tmp_path: Path) -> None:
    """Train-like sequence with local rotation, then finish; a second machine restores the newest."""
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    with VolumeSync(volume, out, save_total_limit=2, backoff_s=0) as sync:
        assert sync.restore() is None
        for step in (10, 20, 30):
            with (out / "metrics.jsonl").open("a") as metrics:
                metrics.write(f'{{"step": {step}}}\n')
            (out / "logs" / "attempt-0.log").write_text(f"at step {step}\n")
            ckpt = make_checkpoint(out, step)
            sync.on_checkpoint(ckpt)
            older = out / f"checkpoint-{step - 20}"
            if older.exists():
                shutil.rmtree(older)
        sync.wait()
        assert _steps(volume) == [20, 30]
        assert volume.read_text("logs/attempt-0.log") == "at step 30\n", "logs follow each checkpoint"
        (out / "adapter_model.safetensors").write_bytes(b"final" * 100)
        (out / "tokenizer.json").write_text("{}")
        manifest = sync.finish()
        assert sync.errors == []
    names = {f.path for f in manifest.files}
    assert names == {"adapter_model.safetensors", "tokenizer.json", "metrics.jsonl", "logs/attempt-0.log"}
    assert manifest.step == 30
    on_volume = volume.sizes()
    assert on_volume["adapter_model.safetensors"] == 500 and OUTPUTS_MANIFEST in on_volume
    assert not any(SNAPSHOT_DIR in rel for rel in on_volume)
    got = restore_latest(volume, tmp_path / "elsewhere")
    assert got is not None and got.name == "checkpoint-30"


def test_restore_uploads_local_checkpoint_missing_on_volume(volume: Volume, tmp_path: Path) -> None:
    """The previous attempt saved checkpoint-2 locally but died before its upload: the next one sends it."""
    out = tmp_path / "out"
    upload_checkpoint(volume, make_checkpoint(out, 1))
    make_checkpoint(out, 2)
    with VolumeSync(volume, out, backoff_s=0) as sync:
        assert sync.restore() == out / "checkpoint-2"
        sync.wait()
    assert _steps(volume) == [1, 2]
    assert volume.read_text(LATEST_NAME) == "checkpoint-2\n"


def test_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server: S3Server) -> None:  # noqa: F811
    monkeypatch.delenv(ENV_VOLUME, raising=False)
    assert VolumeSync.from_env(tmp_path / "out") is None
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    bucket = s3_server.bucket()
    monkeypatch.setenv(ENV_VOLUME, f"s3://{bucket}/r1")
    out = tmp_path / "out"
    with VolumeSync.from_env(out) as sync:  # type: ignore[union-attr]
        sync.on_checkpoint(make_checkpoint(out, 1))
        sync.wait()
        assert _steps(sync.volume) == [1]
