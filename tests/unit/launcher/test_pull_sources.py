"""Where ``pull`` reads a run from, per backend, decided from the registry row alone (no service touched): the
volume when the run has one, else the backend's own place; the Modal case builds a real (lazy, offline)
``modal.Volume`` handle through Modal's SDK. And the launch overrides ``resume`` accepts."""

from __future__ import annotations

import json
import socket
import time

import pytest

from mudpuppy.launcher.errors import UserError
from mudpuppy.launcher.pull import ModalSource, SftpSource, source_for
from mudpuppy.launcher.registry import RunRecord
from mudpuppy.launcher.resume import resume_launch

pytestmark = pytest.mark.timeout(60)


def row(backend: str, launch: dict, output: str | None) -> RunRecord:
    now = time.time()
    return RunRecord(id="20260101-000000-abcdef0123", name="r", backend=backend, handle=f"{backend}://s/1",
                     bundle_hash="0" * 64, config_path="/c.yml", status="failed", reason=None, attempts=1,
                     created=now, updated=now, output=output, launch=json.dumps({"backend": backend, **launch}))


def test_a_volume_wins_over_the_backends_place(tmp_path) -> None:
    source = source_for(row("ssh", {"volume": f"file://{tmp_path}"}, "me@h:22:/remote/out"))
    assert source.url == f"file://{tmp_path}"


def test_ssh_and_slurm_login_runs_are_read_over_sftp() -> None:
    source = source_for(row("ssh", {"ssh": {"hosts": ["me@h:2222", "me@g"]}}, "me@h:2222,me@g:/w/runs/x/node0/out"))
    assert isinstance(source, SftpSource)
    assert source.transport.name == "me@h:2222" and source.transport.port == 2222
    assert source.root == "/w/runs/x/node0/out"
    source = source_for(row("slurm", {"slurm": {"login": "login1"}}, "login1:~/outputs/x"))
    assert isinstance(source, SftpSource) and source.root == "outputs/x"  # SFTP paths are relative to home


def test_local_and_slurm_here_read_the_folder(tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert source_for(row("local", {}, f"{socket.gethostname()}:{out}")).url == f"file://{out}"
    assert source_for(row("slurm", {}, f"local:{out}")).url == f"file://{out}"
    with pytest.raises(UserError, match="not on this machine"):
        source_for(row("local", {}, f"some-other-host:{out}"))
    with pytest.raises(UserError, match="does not exist on this machine"):
        source_for(row("slurm", {}, f"local:{tmp_path}/gone"))


def test_a_modal_run_is_read_from_its_modal_volume() -> None:
    modal = pytest.importorskip("modal")
    source = source_for(row("modal", {"modal": {"volume": "my-runs"}},
                            "modal volume my-runs: /runs/20260101-000000-abcdef0123/outputs/x"))
    assert isinstance(source, ModalSource) and isinstance(source.volume, modal.Volume)
    assert source.root == "runs/20260101-000000-abcdef0123/outputs/x"
    assert source._path("checkpoint-2/mudpuppy-manifest.json") == \
        "/runs/20260101-000000-abcdef0123/outputs/x/checkpoint-2/mudpuppy-manifest.json"
    via_url = source_for(row("local", {"volume": "modal://vol-a/sub/dir"}, None))
    assert isinstance(via_url, ModalSource) and via_url.root == "sub/dir"


def test_skypilot_bucket_runs_are_read_from_their_run_folder() -> None:
    pytest.importorskip("s3fs")
    source = source_for(row("skypilot", {"skypilot": {"bucket": "s3://b/p"}}, None))
    assert source.url == "s3://b/p/runs/20260101-000000-abcdef0123"


def test_ray_without_a_volume_is_refused_in_one_line() -> None:
    with pytest.raises(UserError, match="nothing here can read them"):
        source_for(row("ray", {}, "/tmp/mudpuppy-ray/x (final outputs: the last checkpoint, final-*)"))


def test_resume_overrides_change_only_the_launch_section() -> None:
    record = row("local", {"volume": "file:///v", "slurm": {"partition": "a"}}, None)
    launch = resume_launch(record, {"launch.backend": "slurm", "launch.nodes": 2, "launch.slurm.python": "/p"})
    assert (launch.backend, launch.nodes, launch.slurm.python, launch.slurm.partition) == ("slurm", 2, "/p", "a")
    assert launch.volume == "file:///v"
    with pytest.raises(UserError, match="launch.\\* keys"):
        resume_launch(record, {"learning_rate": 1})
    with pytest.raises(UserError, match="launch.nodes"):
        resume_launch(record, {"launch.nodes": 0})
