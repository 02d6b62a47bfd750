"""`status` reads a run's metrics.jsonl from its s3:// volume on a real S3-compatible server (moto, loopback),
the way the runtime's volume sync wrote it; `runs` does not touch the store but shows what `status` read today."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mudpuppy.launcher.registry import Registry
from mudpuppy.tests.infra.s3 import CREDENTIALS, S3Server, s3_server  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mudpuppy", *args], capture_output=True, text=True, timeout=120,
                          env=env, check=False)


def test_status_reads_the_s3_volume_and_runs_shows_todays_answer(tmp_path: Path, s3_server: S3Server,  # noqa: F811
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from mudpuppy.runtime.checkpoints.sync import upload_side_files
    from mudpuppy.runtime.checkpoints.volume import open_volume

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    bucket = s3_server.bucket()
    url = f"s3://{bucket}/runs/r1"
    out = tmp_path / "out"
    out.mkdir()
    rows = [{"step": s, "loss": 3.0 - s / 10, "tokens_per_second": 50.0 + s, "max_steps": 40, "time": 100.0 + s}
            for s in range(1, 9)]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    upload_side_files(open_volume(url, {"endpoint_url": s3_server.endpoint}), out)  # the runtime's own upload

    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(tmp_path / "state"))
    registry = Registry()
    record = registry.create(name="on-s3", backend="slurm", bundle_hash="0" * 64, config_path="c.yml",
                             launch=json.dumps({"backend": "slurm", "volume": url,
                                                "options": {"volume": {"endpoint_url": s3_server.endpoint}}}))
    # cancelled: `status` does not ask SLURM again; login1 is not this machine, so only the volume answers
    registry.update(record.id, status="cancelled", output="login1:/scratch/out", handle="slurm://login1/123")
    env = {**os.environ, **s3_server.env, "MUDPUPPY_STATE_DIR": str(tmp_path / "state")}
    env.pop("AWS_ENDPOINT_URL")  # the endpoint comes from launch.options.volume, as for the runtime
    before = json.loads(_cli("runs", "--json", env=env).stdout)
    assert before["step"] is None  # `runs` does not read object stores per row

    shown = _cli("status", "on-s3", "--json", env=env)
    assert "Traceback" not in shown.stderr, shown.stderr
    data = json.loads(shown.stdout)
    assert (data["step"], data["total_steps"], data["loss"]) == (8, 40, pytest.approx(2.2))
    assert data["progress_source"] == f"{url}/metrics.jsonl"

    after = json.loads(_cli("runs", "--json", env=env).stdout)
    assert after["step"] == 8 and "(cached" in after["progress_source"]
