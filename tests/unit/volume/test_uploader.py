"""The background uploader: bounded queue (backpressure), retries, snapshots that survive local rotation."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

import pytest

from mudpuppy.runtime.checkpoints.manifest import MANIFEST_NAME, verify
from mudpuppy.runtime.checkpoints.sync import SNAPSHOT_DIR, SyncError, VolumeSync, remote_checkpoints
from mudpuppy.runtime.checkpoints.volume import open_volume
from mudpuppy.tests.unit.volume.helpers import RecordingVolume, make_checkpoint

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def rec(tmp_path: Path) -> RecordingVolume:
    return RecordingVolume(open_volume(f"file://{tmp_path}/vol"))


def test_queue_backpressure_blocks_only_when_full(tmp_path: Path, rec: RecordingVolume) -> None:
    out = tmp_path / "out"
    rec.gate = threading.Event()  # uploads hang until released
    sync = VolumeSync(rec, out, queue_size=1, backoff_s=0)
    try:
        first = sync.on_checkpoint(make_checkpoint(out, 1))
        assert rec.puts_started.acquire(timeout=10)  # checkpoint-1 is now in flight
        second = sync.on_checkpoint(make_checkpoint(out, 2))  # waits in the queue
        assert first < 1.0 and second < 1.0

        third_done = threading.Event()
        ckpt3 = make_checkpoint(out, 3)

        def third() -> None:
            sync.on_checkpoint(ckpt3)
            third_done.set()

        thread = threading.Thread(target=third)
        thread.start()
        assert not third_done.wait(0.5), "third checkpoint should block: one in flight, one queued"
        rec.gate.set()
        assert third_done.wait(10), "releasing the volume should unblock training"
        thread.join()
        sync.wait()
    finally:
        rec.gate.set()
        sync.close()
    assert [c.step for c in remote_checkpoints(rec) if c.complete] == [1, 2, 3]
    assert sync.blocked_s[2] >= 0.4
    assert not list((out / SNAPSHOT_DIR).iterdir()), "snapshots are removed after upload"


def test_snapshot_survives_local_rotation(tmp_path: Path, rec: RecordingVolume) -> None:
    out = tmp_path / "out"
    rec.gate = threading.Event()
    with VolumeSync(rec, out, backoff_s=0) as sync:
        ckpt = make_checkpoint(out, 7, size=100_000)
        sync.on_checkpoint(ckpt)
        shutil.rmtree(ckpt)  # the trainer's own save_total_limit rotated it away mid-upload
        rec.gate.set()
        sync.wait()
    (found,) = remote_checkpoints(rec)
    assert found.complete and found.step == 7
    assert verify(Path(rec.root) / "checkpoint-7", checksums=True)


def test_transient_failures_are_retried(tmp_path: Path, rec: RecordingVolume) -> None:
    out = tmp_path / "out"
    rec.fail_puts = 2
    with VolumeSync(rec, out, retries=3, backoff_s=0) as sync:
        sync.on_checkpoint(make_checkpoint(out, 1))
        sync.wait()
        assert sync.errors == []
    assert [c.step for c in remote_checkpoints(rec) if c.complete] == [1]


def test_permanent_failure_is_reported_not_raised(
    tmp_path: Path, rec: RecordingVolume, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    rec.fail_puts = 100
    with caplog.at_level(logging.ERROR), VolumeSync(rec, out, retries=1, backoff_s=0) as sync:
        sync.on_checkpoint(make_checkpoint(out, 1))
        sync.wait()
        assert len(sync.errors) == 1 and "checkpoint-1" in sync.errors[0]
    assert "upload of checkpoint-1" in caplog.text
    assert not any(c.complete for c in remote_checkpoints(rec))


def test_incomplete_checkpoint_is_refused(tmp_path: Path, rec: RecordingVolume) -> None:
    out = tmp_path / "out"
    ckpt = make_checkpoint(out, 1)
    (ckpt / MANIFEST_NAME).unlink()
    with VolumeSync(rec, out) as sync, pytest.raises(SyncError, match="not a complete checkpoint"):
        sync.on_checkpoint(ckpt)


def test_close_waits_for_queued_uploads(tmp_path: Path, rec: RecordingVolume) -> None:
    """What a SIGTERM handler relies on: close() returns only when the queued checkpoint is on the volume."""
    out = tmp_path / "out"
    rec.gate = threading.Event()
    sync = VolumeSync(rec, out, backoff_s=0)
    sync.on_checkpoint(make_checkpoint(out, 4))
    threading.Timer(0.3, rec.gate.set).start()
    start = time.perf_counter()
    sync.close()
    assert time.perf_counter() - start >= 0.2
    assert [c.step for c in remote_checkpoints(rec) if c.complete] == [4]
    with pytest.raises(SyncError, match="closed"):
        sync.uploader.submit(out / "checkpoint-4")
