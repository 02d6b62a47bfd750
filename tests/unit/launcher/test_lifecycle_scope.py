"""`mudpuppy backends` says where progress, pull and resume read a run from; each claim is checked here against
the code that does it, so the table cannot drift from the behaviour."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from mudpuppy.backends.base import BACKENDS
from mudpuppy.launcher import lifecycle_scope, progress, pull
from mudpuppy.launcher.errors import UserError
from mudpuppy.launcher.registry import RunRecord

pytestmark = pytest.mark.timeout(60)


def _record(backend: str, launch: dict, output: str | None) -> RunRecord:
    return RunRecord(id="r1", name="n", backend=backend, handle=None, bundle_hash="0" * 64, config_path="c.yml",
                     status="failed", reason=None, attempts=1, created=0, updated=0, output=output,
                     launch=json.dumps({"backend": backend, **launch}))


def test_every_backend_has_a_row_in_each_column() -> None:
    for table in (lifecycle_scope.PROGRESS, lifecycle_scope.PULL, lifecycle_scope.RESUME):
        assert set(table) == set(BACKENDS)


def test_ray_without_a_volume_cannot_be_pulled_and_with_one_it_is(tmp_path: Path) -> None:
    assert "volume only" in lifecycle_scope.PULL["ray"]
    with pytest.raises(UserError, match="nothing here can read them"):
        pull.source_for(_record("ray", {}, "ray://head/job"))
    assert pull.source_for(_record("ray", {"volume": f"file://{tmp_path}"}, "ray://head/job")) is not None


def test_progress_reads_the_local_output_dir_and_a_file_volume(tmp_path: Path) -> None:
    out, vol = tmp_path / "out", tmp_path / "vol"
    for folder, step in ((out, 3), (vol, 2)):
        folder.mkdir()
        (folder / "metrics.jsonl").write_text(json.dumps({"step": step, "loss": 1.0, "max_steps": 9}) + "\n")
    record = _record("local", {"volume": f"file://{vol}"}, f"{socket.gethostname()}:{out}")
    found = progress.reachable_metrics(record)
    assert len(found) == 2 and lifecycle_scope.PROGRESS["local"] == "output_dir here; launch.volume"
    assert progress.local_output_dir(_record("ssh", {}, f"gpu1:{out}")) is None  # no shared_fs: logs only
    assert progress.local_output_dir(_record("ssh", {"ssh": {"shared_fs": True}}, f"gpu1:{out}")) == out
