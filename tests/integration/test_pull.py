"""``mudpuppy pull RUN``: from a file:// volume, an S3 volume (a real S3-compatible server), and a remote workdir
over SSH (a real sshd); an interrupted pull run again; a damaged file refused. The sources are written by the
runtime's own code (``mark_complete``, ``write_manifest``, ``upload_outputs``, ``upload_checkpoint``), and the
pulled bytes are compared with the files the run wrote, not with anything ``pull`` produced."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mudpuppy.launcher.registry import Registry
from mudpuppy.runtime.checkpoints.completion import mark_complete
from mudpuppy.runtime.checkpoints.manifest import write_manifest
from mudpuppy.runtime.checkpoints.sync import upload_checkpoint, upload_outputs
from mudpuppy.runtime.checkpoints.volume import open_volume
from mudpuppy.tests.infra.helpers import FAKE, mp, one_line_error
from mudpuppy.tests.infra.s3 import S3Server, s3_server  # noqa: F401  (fixture)
from mudpuppy.tests.infra.services import Sshd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def run_outputs(out: Path) -> Path:
    """A finished run's output folder as the runtime leaves it: final outputs, two checkpoints, the marker."""
    import os

    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "adapter_model.safetensors").write_bytes(os.urandom(300_000))
    (out / "adapter_config.json").write_text('{"r": 4}')
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\n{"step": 4, "loss": 2.1}\n')
    (out / "logs" / "rank0.log").write_text("trained\n")
    for step in (2, 4):
        ckpt = out / f"checkpoint-{step}"
        (ckpt / "sub").mkdir(parents=True)
        (ckpt / "model.safetensors").write_bytes(os.urandom(50_000))
        (ckpt / "sub" / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
        write_manifest(ckpt, step)
    mark_complete(out, 4)
    return out


def to_volume(out: Path, volume: object) -> None:
    """What the runtime's VolumeSync does: checkpoints (manifest last), then outputs (marker last); plus an
    upload that was cut off (checkpoint-6 without its manifest)."""
    upload_checkpoint(volume, out / "checkpoint-2")  # type: ignore[arg-type]
    upload_checkpoint(volume, out / "checkpoint-4")  # type: ignore[arg-type]
    upload_outputs(volume, out, step=4)  # type: ignore[arg-type]
    volume.write_text("checkpoint-6/model.safetensors", "half")  # type: ignore[attr-defined]


def record(name: str, launch: dict, *, output: str | None = None, backend: str = "local",
           status: str = "succeeded") -> str:
    registry = Registry()
    rec = registry.create(name=name, backend=backend, bundle_hash="0" * 64, config_path="/nowhere.yml",
                          launch=json.dumps(launch))
    registry.update(rec.id, status=status, handle=f"{backend}://x/{rec.id}", output=output)
    return rec.id


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


def expected(out: Path, *, checkpoints: bool) -> dict[str, bytes]:
    return {rel: data for rel, data in files(out).items()
            if checkpoints or not rel.startswith("checkpoint-")}


@pytest.fixture()
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_pull_from_a_file_volume_rerun_after_an_interruption_and_a_damaged_file(state: Path) -> None:
    out = run_outputs(state / "run-out")
    volume = open_volume(f"file://{state}/vol")
    to_volume(out, volume)
    run = record("filevol", {"backend": "slurm", "volume": f"file://{state}/vol"})

    # interrupted: one listed file is missing on the volume half-way through the copy (names are copied in order)
    (state / "vol" / "metrics.jsonl").rename(state / "metrics.aside")
    err = one_line_error(mp("pull", run, "--to", "got", "--checkpoints"))
    assert "metrics.jsonl is listed in the run's manifest but missing" in err
    assert (state / "got" / "adapter_model.safetensors").is_file()  # copied before the failure
    assert not (state / "got" / "mudpuppy-outputs.json").exists()  # the marker comes last
    before = {rel: (state / "got" / rel).stat().st_mtime_ns for rel in ("adapter_model.safetensors",)}
    (state / "got" / ".metrics.jsonl.part").write_text('{"step": 1, "lo')  # a torn download of a killed pull
    (state / "metrics.aside").rename(state / "vol" / "metrics.jsonl")

    proc = mp("pull", run, "--to", "got", "--checkpoints")
    assert proc.returncode == 0, proc.stderr
    assert "skipping checkpoint-6" in proc.stderr  # incomplete on the volume: never pulled
    assert "2 checkpoint(s) (checkpoint-2, checkpoint-4)" in proc.stdout
    assert files(state / "got") == expected(out, checkpoints=True)
    assert (state / "got" / "adapter_model.safetensors").stat().st_mtime_ns == before["adapter_model.safetensors"]
    assert "copied adapter_model" not in proc.stderr and "copied metrics.jsonl" in proc.stderr
    assert not list((state / "got").rglob(".*.part"))

    # again: everything is there and verified, nothing copied
    again = mp("pull", run, "--to", "got", "--checkpoints")
    assert again.returncode == 0 and " 0 file(s) copied" in again.stdout, again.stdout

    # a damaged byte on the volume (same size): one line naming the file; nothing written under its name
    adapter = state / "vol" / "adapter_model.safetensors"
    data = bytearray(adapter.read_bytes())
    data[1000] ^= 0xFF
    adapter.write_bytes(bytes(data))
    err = one_line_error(mp("pull", run, "--to", "fresh"))
    assert "adapter_model.safetensors" in err and "damaged" in err and "sha256" in err
    assert not (state / "fresh" / "adapter_model.safetensors").exists()
    assert not list((state / "fresh").glob(".*.part"))
    # the good copy already pulled is kept (it matches the manifest; the damaged one is never fetched over it)
    assert mp("pull", run, "--to", "got").returncode == 0
    good = (out / "adapter_model.safetensors").read_bytes()
    assert (state / "got" / "adapter_model.safetensors").read_bytes() == good

    # a local file that differs from the run's is not overwritten
    (state / "mine").mkdir()
    (state / "mine" / "adapter_config.json").write_text("my own notes")
    err = one_line_error(mp("pull", run, "--to", "mine"))
    assert "adapter_config.json exists and differs" in err
    assert (state / "mine" / "adapter_config.json").read_text() == "my own notes"


def test_pull_refuses_runs_without_reachable_outputs(state: Path) -> None:
    out = state / "unfinished"
    out.mkdir()
    run = record("unfinished", {"backend": "local"}, output=f"{__import__('socket').gethostname()}:{out}",
                 status="failed")
    assert "has no final outputs" in one_line_error(mp("pull", run))
    ray = record("rayrun", {"backend": "ray"}, backend="ray", output="/tmp/mudpuppy-ray/x (final outputs: ...)")
    assert "nothing here can read them" in one_line_error(mp("pull", ray))


def test_pull_from_an_s3_volume(state: Path, s3_server: S3Server) -> None:  # noqa: F811
    out = run_outputs(state / "run-out")
    url = f"s3://{s3_server.bucket()}/runs/r1"
    to_volume(out, open_volume(url, s3_server.storage_options))
    run = record("s3vol", {"backend": "skypilot", "volume": url})
    proc = mp("pull", run, "--to", "got", "--checkpoints", env=s3_server.env)
    assert proc.returncode == 0, proc.stderr
    assert files(state / "got") == expected(out, checkpoints=True)
    proc = mp("pull", run, "--to", "outputs-only", env=s3_server.env)
    assert proc.returncode == 0, proc.stderr
    assert files(state / "outputs-only") == expected(out, checkpoints=False)


def test_pull_from_the_remote_workdir_of_an_ssh_run(sshd: Sshd, project: Path) -> None:
    """A real SSH launch (stand-in runtime); the outputs are then completed in its remote folder as the runtime
    would, and pulled over SFTP from the location the launch recorded."""
    proc = mp("launch", "examples/tiny-alpaca.yml", "--backend", "ssh", "--name", "sshpull",
              "--launch.ssh.hosts", f"[{sshd.host}]", "--launch.ssh.key_file", str(sshd.key_file),
              "--launch.ssh.known_hosts", str(sshd.known_hosts), "--launch.ssh.python", sys.executable,
              "--launch.ssh.workdir", str(project / "remote"), "--launch.entrypoint", FAKE,
              "--launch.env.FAKE_STEPS", "2")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(mp("status", "sshpull", "--json").stdout)
    assert status["status"] == "succeeded" and status["output"].startswith(f"{sshd.host}:")
    remote = Path(status["output"][len(sshd.host) + 1:])
    assert (remote / "final.txt").is_file()  # the stand-in's output: the recorded location is real
    run_outputs(remote)
    proc = mp("pull", "sshpull", "--to", "got", "--checkpoints")
    assert proc.returncode == 0, proc.stderr
    assert files(project / "got") == files(remote)
    assert f"from {sshd.host}:{remote}" in proc.stderr


def test_a_pull_killed_mid_copy_is_finished_by_running_it_again(state: Path) -> None:
    """SIGKILL right after the first file is reported copied (the next one is then being written under its .part
    name); the rerun keeps the finished file as it is, replaces the torn one, and ends with every byte right."""
    import os
    import signal
    import subprocess

    out = state / "big-out"
    out.mkdir()
    for index in range(3):
        (out / f"shard-{index}.bin").write_bytes(os.urandom(48 << 20))
    mark_complete(out, 8)
    volume = open_volume(f"file://{state}/vol")
    upload_outputs(volume, out, step=8)
    run = record("big", {"backend": "local", "volume": f"file://{state}/vol"})
    proc = subprocess.Popen([sys.executable, "-m", "mudpuppy", "pull", run, "--to", "got"], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("copied "):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    got = state / "got"
    assert (got / "shard-0.bin").read_bytes() == (out / "shard-0.bin").read_bytes()
    assert not (got / "mudpuppy-outputs.json").exists() and not (got / "shard-2.bin").exists()
    kept = (got / "shard-0.bin").stat().st_mtime_ns
    again = mp("pull", run, "--to", "got")
    assert again.returncode == 0, again.stderr
    assert "copied shard-0.bin" not in again.stderr and "copied shard-2.bin" in again.stderr
    assert (got / "shard-0.bin").stat().st_mtime_ns == kept
    assert files(got) == files(out) and not list(got.glob(".*.part"))
