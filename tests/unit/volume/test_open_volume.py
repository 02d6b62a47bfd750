"""Volume URLs: each scheme opens the right filesystem, and every bad URL is a one-line UserError."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.checkpoints.volume import ENV_MODAL_VOLUME_ROOT, open_volume

pytestmark = pytest.mark.timeout(300)


def test_file_volume_roundtrip(tmp_path: Path) -> None:
    vol = open_volume(f"file://{tmp_path}/runs/a")
    assert vol.is_local and (tmp_path / "runs" / "a").is_dir()
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 10)
    vol.put_file(src, "deep/dir/f.bin")
    vol.write_text("note.txt", "hello")
    assert vol.sizes() == {"deep/dir/f.bin": 10, "note.txt": 5}
    assert vol.read_text("note.txt") == "hello"
    assert vol.read_text("missing.txt") is None
    assert not list((tmp_path / "runs" / "a").glob(".*tmp*")), "atomic write left its temp file"
    child = vol.child("deep")
    assert child.sizes() == {"dir/f.bin": 10}
    vol.remove("deep", recursive=True)
    assert vol.sizes() == {"note.txt": 5}


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("/abs/path", "file:///abs/path"),
        ("relative/dir", "unsupported scheme"),
        ("ftp://host/x", "unsupported scheme 'ftp'"),
        ("file://host/x", "absolute path"),
        ("s3:///prefix", "names no bucket"),
        ("modal://", "names no Modal volume"),
    ],
)
def test_bad_urls_are_one_line_user_errors(url: str, needle: str) -> None:
    with pytest.raises(UserError) as info:
        open_volume(url)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_gs_without_gcsfs_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # import gcsfs -> ImportError
    with pytest.raises(UserError, match=r"needs gcsfs.*mudpuppy\[gcs\]"):
        open_volume("gs://bucket/prefix")


def test_s3_without_s3fs_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)
    with pytest.raises(UserError, match=r"needs s3fs.*mudpuppy\[s3\]"):
        open_volume("s3://bucket/prefix")


def test_s3_endpoint_from_env_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    vol = open_volume("s3://bucket/a/b/")
    assert vol.root == "bucket/a/b"
    assert vol.fs.client_kwargs["endpoint_url"] == "http://127.0.0.1:1"
    vol = open_volume("s3://bucket", {"endpoint_url": "http://127.0.0.1:2"})
    assert vol.root == "bucket" and vol.fs.client_kwargs["endpoint_url"] == "http://127.0.0.1:2"


def test_modal_volume_uses_mount_and_hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setenv(ENV_MODAL_VOLUME_ROOT, str(tmp_path))
    vol = open_volume(
        "modal://ckpts/run-1",
        {"commit_hook": lambda: calls.append("commit"), "reload_hook": lambda: calls.append("reload")},
    )
    assert vol.root == str(tmp_path / "run-1") and vol.is_local
    vol.write_text("latest", "checkpoint-1\n")
    vol.commit()
    vol.reload()
    assert calls == ["commit", "reload"]
    assert (tmp_path / "run-1" / "latest").read_text() == "checkpoint-1\n"


def test_modal_volume_not_mounted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_MODAL_VOLUME_ROOT, str(tmp_path / "nope"))
    with pytest.raises(UserError, match="not mounted at"):
        open_volume("modal://ckpts")


def test_modal_default_hooks_call_modal_volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without injected hooks, commit/reload go to modal.Volume.from_name(name) (modal stubbed here)."""
    import types

    calls: list[tuple[str, str]] = []

    class FakeVolume:
        def __init__(self, name: str) -> None:
            self.name = name

        @classmethod
        def from_name(cls, name: str) -> FakeVolume:
            return cls(name)

        def commit(self) -> None:
            calls.append(("commit", self.name))

        def reload(self) -> None:
            calls.append(("reload", self.name))

    monkeypatch.setitem(sys.modules, "modal", types.SimpleNamespace(Volume=FakeVolume))
    vol = open_volume("modal://ckpts", {"mount_path": str(tmp_path)})
    vol.commit()
    vol.reload()
    assert calls == [("commit", "ckpts"), ("reload", "ckpts")]
