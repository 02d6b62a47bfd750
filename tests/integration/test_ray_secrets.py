"""A secret given to the ray backend reaches the training process but nothing Ray records or shows.

Real local Ray cluster: head on 127.0.0.2 and a second node on 127.0.0.3, one Train worker on each. The
job's entrypoint is swapped for ``tests.infra.secret_probe``,
which each Train worker runs as a child process and which records the sha256 of the secret it sees. Then the
places Ray keeps job data are searched for the value: ``ray job list`` (the CLI), ``get_job_info`` (runtime_env,
entrypoint, metadata), the dashboard's HTTP API (jobs, tasks, actors, Train runs), the job's logs, and every file
under the cluster's temp dir (logs, unpacked working_dir packages). A plain ``launch.env`` value submitted with
the same job is the positive control: it must show up in those same places, so the searches can see runtime_env.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray.job_submission")

from mudpuppy.backends.base import State  # noqa: E402
from mudpuppy.launcher import dispatch  # noqa: E402
from mudpuppy.launcher.registry import Registry, new_run_id  # noqa: E402
from tests.infra.ray import RayCluster, _kill_leftovers, ray_cluster, ray_env  # noqa: E402
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
    probe_out = tmp_path / "probe"
    probe_out.mkdir()
    # two nodes with one CPU each: one Train worker per node, so a second node unpacks the working_dir afresh
    with ray_cluster(num_cpus=1) as cluster, second_node(cluster) as node_dir:
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)
        config = tiny_config(tmp_path, launch={
            "backend": "ray", "retries": 0, "secrets": [SECRET_NAME],
            "entrypoint": "mudpuppy.tests.infra.secret_probe",
            "env": {"MP_PROBE_OUT": str(probe_out), "MP_PLAIN_MARKER": plain, "OMP_NUM_THREADS": "1"},
            # the cluster imports this tree (it has tests/infra); the shipped wheel would not
            "ray": {"num_workers": 2, "ship_source": False, "workdir": str(tmp_path / "work"),
                    "resources_per_worker": {"CPU": 1}},
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

        # each training process (a child of a Train worker, one per node) saw exactly the secret
        seen = [json.loads(p.read_text()) for p in probe_out.iterdir()]
        assert len(seen) == 2, seen
        assert all(s["set"] and s["sha256"] == hashlib.sha256(secret.encode()).hexdigest() for s in seen)

        _assert_nowhere_in_ray(cluster, job_id, secret, plain, logs)
        # the second node's unpacked copy of the working_dir lost its secrets file too (its worker deleted it)
        unpacked = [p for p in node_dir.rglob("bundle.tar.gz") if "runtime_resources" in str(p)]
        assert unpacked, "the second node never unpacked the working_dir: no worker ran there"
        assert not list(node_dir.rglob(".mudpuppy-secrets.json"))
        assert not _files_containing(node_dir, secret.encode())
        # nothing left behind on this machine either: the private working_dir copy was removed after upload
        assert not list((tmp_path / "state").rglob(".job-secrets-*"))
        assert not _files_containing(tmp_path / "state", secret.encode())


@contextlib.contextmanager
def second_node(cluster: RayCluster, num_cpus: int = 1) -> Iterator[Path]:
    """A worker node on 127.0.0.3 joined to ``cluster``, with its own temp dir; stopped by process group."""
    node_dir = Path(tempfile.mkdtemp(prefix="ray2", dir="/tmp"))
    cmd = [str(Path(sys.executable).with_name("ray")), "start", f"--address={cluster.gcs}", "--block",
           "--node-ip-address=127.0.0.3", f"--num-cpus={num_cpus}", "--num-gpus=0", f"--temp-dir={node_dir}",
           "--object-store-memory=100000000", "--disable-usage-stats"]
    with open(node_dir / "node.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ray_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            nodes = json.loads(_get(cluster.address + "/nodes?view=summary")[1] or "{}")
            alive = [n for n in (nodes.get("data") or {}).get("summary", []) if n.get("raylet", {}).get("state")
                     == "ALIVE"]
            if len(alive) >= 2:
                break
            assert proc.poll() is None and time.monotonic() < deadline, (node_dir / "node.log").read_text()[-3000:]
            time.sleep(1)
        yield node_dir
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        _kill_leftovers(node_dir)
        shutil.rmtree(node_dir, ignore_errors=True)


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
