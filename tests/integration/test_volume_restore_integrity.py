"""Restoring from a volume trusts nothing it reads: damaged local copies are kept aside, not deleted; damaged
volumes never become a silent restart; hostile manifests (``..``, absolute paths, symlinks) write nothing outside
the output folder and read nothing outside the volume. Against a file:// directory and moto's S3 server."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.checkpoints import verified
from mudpuppy.runtime.checkpoints.manifest import MANIFEST_NAME, FileEntry, Manifest, verify
from mudpuppy.runtime.checkpoints.sync import (
    RemoteCheckpoint,
    SyncError,
    download_checkpoint,
    remote_checkpoints,
    restore_latest,
    upload_checkpoint,
)
from mudpuppy.runtime.checkpoints.volume import Volume, open_volume
from mudpuppy.tests.infra.s3 import S3Server, s3_server  # noqa: F401  (fixture)
from mudpuppy.tests.unit.volume.helpers import make_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PAYLOAD = b"attacker-controlled bytes\n"


@pytest.fixture(params=["file", "s3"])
def volume(request: pytest.FixtureRequest, tmp_path: Path) -> Volume:
    if request.param == "file":
        return open_volume(f"file://{tmp_path}/volume/run-1")
    server: S3Server = request.getfixturevalue("s3_server")
    return open_volume(f"s3://{server.bucket()}/runs/run-1", server.storage_options)


def flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def test_damaged_local_newest_is_replaced_by_the_volume_copy_and_kept_aside(volume: Volume, tmp_path: Path) -> None:
    out = tmp_path / "work" / "out"
    make_checkpoint(out, 2)
    upload_checkpoint(volume, make_checkpoint(out, 4))
    flip_bit(out / "checkpoint-4" / "model.safetensors")
    damaged = (out / "checkpoint-4" / "model.safetensors").read_bytes()
    got = restore_latest(volume, out)
    assert got == out / "checkpoint-4" and verify(got, checksums=True)
    kept = [p for p in out.iterdir() if p.name.startswith(f".checkpoint-4{verified.CORRUPT_MARK}")]
    assert len(kept) == 1 and (kept[0] / "model.safetensors").read_bytes() == damaged


def test_damaged_local_newest_without_volume_copy_falls_back_locally(
    volume: Volume, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "work" / "out"
    upload_checkpoint(volume, make_checkpoint(out, 2))
    make_checkpoint(out, 4)  # saved, never uploaded, then damaged on disk
    flip_bit(out / "checkpoint-4" / "model.safetensors")
    assert restore_latest(volume, out) == out / "checkpoint-2"
    with caplog.at_level(logging.WARNING):
        assert verified.choose(out) == out / "checkpoint-2"
    assert "checkpoint-4 failed verification" in caplog.text and "model.safetensors" in caplog.text


def test_everything_damaged_refuses_instead_of_restarting(volume: Volume, tmp_path: Path) -> None:
    src = tmp_path / "src"
    upload_checkpoint(volume, make_checkpoint(src, 2))
    rel = "checkpoint-2/model.safetensors"
    data = bytearray(volume.fs.cat_file(volume.path(rel)))
    data[0] ^= 0xFF
    volume.fs.pipe_file(volume.path(rel), bytes(data))
    volume.invalidate()
    out = tmp_path / "work" / "out"
    with pytest.raises(UserError, match=r"no checkpoint in .* passed sha256 verification \(checkpoint-2 on .*sha256"):
        restore_latest(volume, out)
    assert [c.step for c in remote_checkpoints(volume)] == [2], "the volume copy is left for the user"


def test_truncated_volume_manifest_is_named_and_never_a_silent_restart(
    volume: Volume, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    upload_checkpoint(volume, make_checkpoint(tmp_path / "src", 3))
    text = volume.read_text(f"checkpoint-3/{MANIFEST_NAME}") or ""
    volume.write_text(f"checkpoint-3/{MANIFEST_NAME}", text[:20])
    with caplog.at_level(logging.WARNING), pytest.raises(UserError, match="checkpoint-3 on .*truncated or unreadable"):
        restore_latest(volume, tmp_path / "out")
    assert f"truncated or unreadable {MANIFEST_NAME}" in caplog.text


def _put_raw(volume: Volume, server: S3Server | None, rel: str, data: bytes) -> None:
    """Write an object under exactly this key, ``..`` and all (S3 keys are plain strings)."""
    if server is None:
        volume.fs.pipe_file(volume.path(rel), data)
        return
    import boto3

    bucket, _, prefix = volume.root.partition("/")
    client = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.put_object(Bucket=bucket, Key=f"{prefix}/{rel}", Body=data)


def _manifest(step: int, paths: list[str]) -> Manifest:
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    return Manifest(step=step, files=[FileEntry(path=p, size=len(PAYLOAD), sha256=digest) for p in paths])


def test_s3_keys_with_dotdot_in_a_manifest_write_nothing_outside(
    tmp_path: Path, s3_server: S3Server, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    """On S3 a key may literally hold ``../``: listing sizes then match, so the manifest looks complete."""
    volume = open_volume(f"s3://{s3_server.bucket()}/runs/run-1", s3_server.storage_options)
    upload_checkpoint(volume, make_checkpoint(tmp_path / "src", 1))
    evil = ["../../escaped.txt", "sub/../../../../escaped2.txt"]
    for rel in evil:
        _put_raw(volume, s3_server, f"checkpoint-9/{rel}", PAYLOAD)
    _put_raw(volume, s3_server, f"checkpoint-9/{MANIFEST_NAME}", _manifest(9, evil).to_json().encode())
    hostile = next(c for c in remote_checkpoints(volume) if c.step == 9)
    assert hostile.complete, "precondition: the hostile checkpoint passes the size check"
    work = tmp_path / "work"
    out = work / "a" / "out"
    before = files_under(tmp_path)
    with caplog.at_level(logging.WARNING):
        got = restore_latest(volume, out)
    assert got == out / "checkpoint-1"
    assert "escapes the checkpoint folder" in caplog.text
    after = files_under(tmp_path)
    new = sorted(set(after) - set(before))
    assert all(path.startswith(str(out / "checkpoint-1")) for path in new), new
    assert not any(body == PAYLOAD for body in after.values())


@pytest.mark.parametrize("entry", ["../../escaped.txt", "sub/../../../escaped.txt", "/ABS/escaped.txt"])
def test_hostile_entry_paths_are_refused_before_any_write(volume: Volume, tmp_path: Path, entry: str) -> None:
    """The writer's own check, independent of the listing: a manifest naming a path outside never lands."""
    absolute = entry.replace("/ABS", str(tmp_path))
    _put_raw(volume, None, "checkpoint-5/model.safetensors", PAYLOAD)
    out = tmp_path / "work" / "out"
    out.mkdir(parents=True)
    ckpt = RemoteCheckpoint("checkpoint-5", 5, _manifest(5, ["model.safetensors", absolute]), True)
    before = files_under(tmp_path)
    with pytest.raises(SyncError, match="escapes the checkpoint folder"):
        download_checkpoint(volume, ckpt, out)
    assert files_under(tmp_path) == before
    assert list(out.iterdir()) == []


def test_symlinks_on_a_file_volume_are_refused(tmp_path: Path) -> None:
    volume = open_volume(f"file://{tmp_path}/volume/run-1")
    secret = tmp_path / "home" / ".aws" / "credentials"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(PAYLOAD)
    upload_checkpoint(volume, make_checkpoint(tmp_path / "src", 1))
    root = Path(volume.root)
    (root / "checkpoint-7").mkdir()
    os.symlink(secret, root / "checkpoint-7" / "model.safetensors")  # a file link out of the volume
    (root / "checkpoint-7" / MANIFEST_NAME).write_text(_manifest(7, ["model.safetensors"]).to_json())
    os.symlink(secret.parent, root / "checkpoint-8")  # a whole checkpoint folder linked out of the volume
    (secret.parent / MANIFEST_NAME).write_text(_manifest(8, ["credentials"]).to_json())
    out = tmp_path / "work" / "out"
    assert restore_latest(volume, out) == out / "checkpoint-1"  # the listing already skips links...
    for name, entry in (("checkpoint-7", "model.safetensors"), ("checkpoint-8", "credentials")):
        ckpt = RemoteCheckpoint(name, int(name[-1]), _manifest(int(name[-1]), [entry]), True)
        with pytest.raises(SyncError, match="is a symlink on the volume"):  # ...and the writer refuses them too
            download_checkpoint(volume, ckpt, out)
    assert not any(body == PAYLOAD for body in files_under(out).values())
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-1"]
    assert json.loads((out / "checkpoint-1" / MANIFEST_NAME).read_text())["step"] == 1
