"""A secret given to the ray backend reaches the training process but nothing Ray records or shows.

Real local Ray cluster (head on 127.0.0.2). The job's entrypoint is swapped for ``tests.infra.secret_probe``,
which each Train worker runs as a child process and which records the sha256 of the secret it sees. Then the
places Ray keeps job data are searched for the value: ``ray job list`` (the CLI), ``get_job_info`` (runtime_env,
entrypoint, metadata), the dashboard's HTTP API (jobs, tasks, actors, Train runs), the job's logs, and every file
under the cluster's temp dir (logs, unpacked working_dir packages). A plain ``launch.env`` value submitted with
the same job is the positive control: it must show up in those same places, so the searches can see runtime_env.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

pytest.importorskip("ray.job_submission")

from mudpuppy.backends.base import State  # noqa: E402
from mudpuppy.launcher import dispatch  # noqa: E402
from mudpuppy.launcher.registry import Registry, new_run_id  # noqa: E402
from tests.infra.ray import RayCluster, ray_cluster, ray_env  # noqa: E402
from tests.infra.tiny_bundle import tiny_config  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]
SECRET_NAME = "MP_PROBE_SECRET"


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _files_containing(root: Path, needle: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and path.stat().st_size < 200_000_000 \
                    and needle in path.read_bytes():
                found.append(str(path))
        except OSError:
            continue
    return found


def test_secret_reaches_workers_but_not_ray_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    plain = f"plain-{uuid.uuid4().hex}"
    for key, value in ray_env().items():
        if key.startswith("RAY_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MUDPUPPY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(SECRET_NAME, secret)
    monkeypatch.chdir(tmp_path)
    probe_out = tmp_path / "probe.json"
    with ray_cluster(num_cpus=2) as cluster:
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)
        config = tiny_config(tmp_path, launch={
            "backend": "ray", "retries": 0, "secrets": [SECRET_NAME],
            "entrypoint": "mudpuppy.tests.infra.secret_probe",
            "env": {"MP_PROBE_OUT": str(probe_out), "MP_PLAIN_MARKER": plain, "OMP_NUM_THREADS": "1"},
            # the cluster imports this tree (it has tests/infra); the shipped wheel would not
            "ray": {"num_workers": 1, "ship_source": False, "workdir": str(tmp_path / "work")},
        })
        registry = Registry()
        record = dispatch.submit(dispatch.prepare(str(config), {}, new_run_id()), str(config), registry)
        job_id = f"mudpuppy-{record.id}"
        deadline = time.monotonic() + 300
        while True:
            record, status = dispatch.refresh(record, registry)
            if status.state.terminal or time.monotonic() > deadline:
                break
            time.sleep(1)
        logs = "".join(dispatch.iter_logs(record, follow=False))
        assert status.state == State.SUCCEEDED, logs[-4000:]

        # the training process (a child of the Train worker) saw exactly the secret
        seen = json.loads(probe_out.read_text())
        assert seen["set"] and seen["sha256"] == hashlib.sha256(secret.encode()).hexdigest()

        _assert_nowhere_in_ray(cluster, job_id, secret, plain, logs)
        # nothing left behind on this machine either: the private working_dir copy was removed after upload
        assert not list((tmp_path / "state").rglob(".job-secrets-*"))
        assert not _files_containing(tmp_path / "state", secret.encode())


def _assert_nowhere_in_ray(cluster: RayCluster, job_id: str, secret: str, plain: str, logs: str) -> None:
    from ray.job_submission import JobSubmissionClient

    info = JobSubmissionClient(cluster.address).get_job_info(job_id)
    recorded = json.dumps({"runtime_env": info.runtime_env, "entrypoint": info.entrypoint,
                           "metadata": info.metadata}, default=str)
    assert plain in recorded  # control: runtime_env.env_vars is recorded as is
    assert secret not in recorded and SECRET_NAME not in json.dumps(info.runtime_env)

    cli = subprocess.run([str(Path(sys.executable).with_name("ray")), "job", "list", "--address", cluster.address],
                         capture_output=True, text=True, timeout=120, env=ray_env(), check=False)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert plain in cli.stdout and secret not in cli.stdout + cli.stderr

    pages = {}
    for path in ("/api/jobs/", f"/api/jobs/{job_id}", "/api/v0/tasks?detail=1&limit=10000",
                 "/api/v0/actors?detail=1&limit=10000", "/api/train/v2/runs", "/nodes?view=details",
                 "/logical/actors"):
        code, body = _get(cluster.address + path)
        pages[path] = code
        assert secret not in body, path
    assert pages["/api/jobs/"] == 200 and pages[f"/api/jobs/{job_id}"] == 200 and \
        pages["/api/v0/tasks?detail=1&limit=10000"] == 200, pages
    assert plain in _get(cluster.address + "/api/jobs/")[1]  # control

    assert secret not in logs
    assert not _files_containing(cluster.temp_dir, secret.encode())  # logs, unpacked working_dir packages
