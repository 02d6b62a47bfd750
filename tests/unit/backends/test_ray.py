"""The ray backend without a cluster: the job request ``plan`` builds, staging, state mapping, and the errors that
must come before anything is submitted. The real-cluster tests are in tests/integration/test_ray.py.
"""

from __future__ import annotations

import json
import shlex
import zipfile
from pathlib import Path
from typing import Any

import pytest

from mudpuppy.backends.base import State
from mudpuppy.backends.ray import (
    SECRETS_FILE,
    RayBackend,
    job_spec,
    map_state,
    resolve_address,
    stage,
    storage_path,
)
from mudpuppy.launcher.config.schema.launch import LaunchSection
from mudpuppy.launcher.errors import UserError
from tests.infra.tiny_bundle import tiny_bundle

pytestmark = pytest.mark.timeout(300)


def launch(**values: Any) -> LaunchSection:
    return LaunchSection.model_validate({"backend": "ray", **values})


@pytest.fixture
def bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    wheel = tmp_path / "mudpuppy-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mudpuppy/__init__.py", "__version__ = 'x'\n")
        zf.writestr("mudpuppy/templates/examples/a.yml", "a: 1\n")
        zf.writestr("mudpuppy-0.1.0.dist-info/METADATA", "Name: mudpuppy\n")
    return tiny_bundle(tmp_path / "cfg", wheel=wheel)[1]


def test_plan_is_a_pure_job_request(bundle: Any) -> None:
    lx = launch(gpus="A100:4", nodes=2, retries=5, volume="s3://b/runs", env={"NCCL_DEBUG": "INFO"},
                secrets=["HF_TOKEN"], ray={"address": "http://head:8265", "resources_per_worker": {"CPU": 8}})
    plan = RayBackend(lx).plan(bundle, "r1")
    assert plan == RayBackend(lx).plan(bundle, "r1")
    request = plan.extra["request"]
    assert request["submission_id"] == "mudpuppy-r1" and plan.session == "http://head:8265"
    env = request["runtime_env"]
    assert Path(env["working_dir"]).name == "job" and env["py_modules"][0].endswith("/src/mudpuppy")
    assert env["env_vars"] == {"NCCL_DEBUG": "INFO", "MUDPUPPY_RUN_ID": "r1", "MUDPUPPY_BUNDLE": "bundle.tar.gz",
                               "MUDPUPPY_VOLUME": "s3://b/runs"}
    assert "pip" not in env and "HF_TOKEN" not in json.dumps(request)
    spec = json.loads(shlex.split(request["entrypoint"])[-1])
    # secret values are never in the request: the driver reads them from a file shipped with the working_dir
    assert request["entrypoint"].startswith(
        "python -m mudpuppy.launcher.ray_entry --secrets-file .mudpuppy-secrets.json --spec ")
    assert spec == {"run_id": "r1", "bundle": "bundle.tar.gz", "entrypoint": "mudpuppy.runtime", "num_workers": 8,
                    "use_gpu": True, "resources_per_worker": {"CPU": 8, "accelerator_type:A100": 0.001},
                    "storage_path": "s3://b/runs", "max_failures": 5, "num_to_keep": 2, "workdir": "/tmp/mudpuppy-ray",
                    "backend": "nccl"}
    assert plan.script.splitlines()[-1] == request["entrypoint"]


def test_cpu_defaults_and_pip_option(bundle: Any) -> None:
    plan = RayBackend(launch(ray={"num_workers": 2, "pip": True, "ship_source": False})).plan(bundle, "r")
    spec = json.loads(shlex.split(plan.extra["request"]["entrypoint"])[-1])
    assert spec["use_gpu"] is False and spec["backend"] == "gloo" and spec["num_workers"] == 2
    assert spec["storage_path"] is None
    env = plan.extra["request"]["runtime_env"]
    assert "py_modules" not in env and "torch==2.13.0" in env["pip"]


def test_storage_path_and_address_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    assert storage_path(launch(volume="file:///shared/ckpt")) == "/shared/ckpt"
    assert storage_path(launch(volume="s3://b/p", ray={"storage_path": "/nfs/x"})) == "/nfs/x"
    with pytest.raises(UserError, match="Modal volume"):
        storage_path(launch(volume="modal://v"))
    monkeypatch.setenv("RAY_ADDRESS", "http://10.0.0.1:8265/")
    assert resolve_address(launch()) == "http://10.0.0.1:8265"
    with pytest.raises(UserError, match=r"not a dashboard URL \(use the Jobs API address, e.g. http://h:8265"):
        resolve_address(launch(ray={"address": "ray://h:10001"}))
    assert job_spec(launch(gpus="H100:8", ray={"use_gpu": False}), "r")["use_gpu"] is False


def test_accelerator_label_is_rays_name() -> None:
    spec = job_spec(launch(gpus="A100-80GB:8"), "r")
    assert spec["resources_per_worker"] == {"accelerator_type:A100": 0.001}
    assert job_spec(launch(gpus="A10"), "r")["resources_per_worker"] == {"accelerator_type:A10G": 0.001}
    with pytest.raises(UserError, match="Ray has no accelerator type 'X9'"):
        job_spec(launch(gpus="X9:2"), "r")


def test_multi_node_needs_shared_storage() -> None:
    with pytest.raises(UserError) as err:
        job_spec(launch(nodes=2, gpus="H100:8"), "r")
    assert err.value.one_line() == (
        "launch.nodes is 2 but the ray backend has no shared storage for checkpoints (set launch.ray.storage_path "
        "(or launch.volume) to an NFS path or s3:// / gs:// URI)")
    assert job_spec(launch(nodes=2, ray={"storage_path": "s3://b/x"}), "r")["storage_path"] == "s3://b/x"
    assert job_spec(launch(nodes=1), "r")["storage_path"] is None


def test_num_to_keep_comes_from_save_total_limit(bundle: Any) -> None:
    import dataclasses

    assert "save_total_limit: 2\n" in bundle.config_text
    text = bundle.config_text.replace("save_total_limit: 2\n", "save_total_limit: 3\n")
    plan = RayBackend(launch()).plan(dataclasses.replace(bundle, config_text=text), "r")
    assert json.loads(shlex.split(plan.extra["request"]["entrypoint"])[-1])["num_to_keep"] == 3


def test_no_cluster_is_one_line_and_stages_nothing(bundle: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray.job_submission")
    from tests.infra.services import free_port

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    backend = RayBackend(launch(ray={"address": f"http://127.0.0.1:{free_port()}"}))
    plan = backend.plan(bundle, "r")
    with pytest.raises(UserError) as err:
        backend.submit(plan)
    line = err.value.one_line()
    assert line.startswith("no Ray cluster answers at http://127.0.0.1:") and "ray start --head" in line
    assert not Path(plan.extra["stage"]).exists()


def test_missing_secret_fails_before_contacting_ray(bundle: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    backend = RayBackend(launch(secrets=["HF_TOKEN"]))
    monkeypatch.setattr(backend, "_client", lambda address: pytest.fail("contacted Ray"))
    with pytest.raises(UserError, match="secret HF_TOKEN is not set"):
        backend.submit(backend.plan(bundle, "r"))


def test_stage_links_the_bundle_and_unpacks_the_source_once(bundle: Any, tmp_path: Path) -> None:
    target = tmp_path / "stage"
    stage(bundle.path, target, bundle.image["wheel"], ship_source=True)
    assert (target / "job" / "bundle.tar.gz").read_bytes() == bundle.path.read_bytes()
    assert (target / "src" / "mudpuppy" / "__init__.py").is_file()
    assert (target / "src" / "mudpuppy" / "templates" / "examples" / "a.yml").is_file()
    assert not (target / "src" / "mudpuppy-0.1.0.dist-info").exists()
    stage(bundle.path, target, bundle.image["wheel"], ship_source=True)  # idempotent
    assert sorted(p.name for p in target.iterdir()) == ["job", "src"]


def test_state_mapping() -> None:
    assert map_state("JobStatus.STOPPED") == State.CANCELLED
    assert map_state("PENDING") == State.PENDING and map_state("RUNNING") == State.RUNNING
    assert map_state("SUCCEEDED") == State.SUCCEEDED and map_state("FAILED") == State.FAILED
    assert map_state("NEW") == State.UNKNOWN


def test_backend_modules_import_no_sdk() -> None:
    """Loading the ray/modal/skypilot backends (e.g. for `mudpuppy backends`) must not import their SDKs."""
    import subprocess
    import sys

    code = ("import sys, mudpuppy.backends.ray, mudpuppy.backends.modal, mudpuppy.backends.skypilot, "
            "mudpuppy.launcher.cli.image_cmd, mudpuppy.launcher.ray_entry; "
            "print(sorted(m for m in ('ray', 'modal', 'sky', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class _RecordingClient:
    """Stands in for JobSubmissionClient: records what the working_dir held at the moment of submission
    (Ray zips and uploads it inside ``submit_job``)."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    def submit_job(self, **request: Any) -> str:
        folder = Path(request["runtime_env"]["working_dir"])
        secret_file = folder / SECRETS_FILE
        self.seen = {"request": json.loads(json.dumps(request)), "files": sorted(p.name for p in folder.iterdir()),
                     "mode": secret_file.stat().st_mode & 0o777, "dir_mode": folder.stat().st_mode & 0o777,
                     "content": json.loads(secret_file.read_text()), "folder": folder}
        return request["submission_id"]


def test_secrets_travel_in_a_private_file_not_the_request(bundle: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_value_123")
    backend = RayBackend(launch(secrets=["HF_TOKEN"], env={"PLAIN": "1"}))
    client = _RecordingClient()
    monkeypatch.setattr(backend, "_client", lambda address: client)
    plan = backend.plan(bundle, "r")
    backend.submit(plan)
    seen = client.seen
    assert "hf_value_123" not in json.dumps(seen["request"]) and "HF_TOKEN" not in json.dumps(seen["request"])
    assert seen["request"]["runtime_env"]["env_vars"]["PLAIN"] == "1"
    assert seen["files"] == sorted([SECRETS_FILE, "bundle.tar.gz"])
    assert seen["mode"] == 0o600 and seen["dir_mode"] == 0o700
    assert seen["content"]["values"] == {"HF_TOKEN": "hf_value_123"} and len(seen["content"]["nonce"]) == 32
    assert not seen["folder"].exists()  # removed once Ray has uploaded it
    assert (Path(plan.extra["stage"]) / "job" / "bundle.tar.gz").is_file()  # the shared staging is untouched


def test_driver_takes_the_secrets_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mudpuppy.launcher import ray_entry

    path = tmp_path / SECRETS_FILE
    path.write_text(json.dumps({"nonce": "n", "values": {"HF_TOKEN": "v"}}))
    assert ray_entry.take_secrets(path) == {"HF_TOKEN": "v"} and not path.exists()
    assert ray_entry.take_secrets(path) is None
    monkeypatch.chdir(tmp_path)
    spec = json.dumps(job_spec(launch(), "r"))
    assert ray_entry.main(["--secrets-file", SECRETS_FILE, "--spec", spec]) == 2  # missing: a clear stop


def test_worker_removes_unpacked_copies_wherever_ray_put_them(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray starts a worker with `cd WORKING_DIR && ...` and WORKING_DIR first on PYTHONPATH; Ray Train then
    chdirs it elsewhere. The secrets file must go from the unpacked working_dir all the same."""
    from mudpuppy.launcher.ray_entry import remove_unpacked_copies

    pwd, pythonpath, elsewhere = tmp_path / "pwd", tmp_path / "pp", tmp_path / "train-dir"
    for folder in (pwd, pythonpath, elsewhere):
        folder.mkdir()
        (folder / SECRETS_FILE).write_text("{}")
    (pwd / "bundle.tar.gz").write_text("keep")
    monkeypatch.setenv("PWD", str(pwd))
    monkeypatch.setenv("PYTHONPATH", f"{pythonpath}:{tmp_path / 'missing'}")
    monkeypatch.chdir(elsewhere)
    remove_unpacked_copies(SECRETS_FILE)
    assert not any((f / SECRETS_FILE).exists() for f in (pwd, pythonpath, elsewhere))
    assert (pwd / "bundle.tar.gz").read_text() == "keep"


def test_large_bundle_goes_through_storage(bundle: Any, tmp_path: Path) -> None:
    """The size decision, on a sparse stand-in of a 600 MiB bundle (no disk used): storage, or one line."""
    import dataclasses

    from mudpuppy.backends.ray import WORKING_DIR_LIMIT

    big = tmp_path / "big" / "bundle-x.tar.gz"
    big.parent.mkdir()
    with open(big, "wb") as out:
        out.truncate(600 * 2**20)
    assert big.stat().st_size > WORKING_DIR_LIMIT >= bundle.path.stat().st_size
    large = dataclasses.replace(bundle, path=big)
    with pytest.raises(UserError) as err:
        RayBackend(launch()).plan(large, "r")
    assert err.value.one_line().startswith(
        "bundle bundle-x.tar.gz is 600 MiB, over Ray's 500 MiB working_dir upload limit (set launch.ray.storage_path")
    plan = RayBackend(launch(ray={"storage_path": "s3://b/runs"})).plan(large, "r7")
    spec = json.loads(shlex.split(plan.extra["request"]["entrypoint"])[-1])
    assert spec["bundle"] == plan.extra["bundle_upload"] == "s3://b/runs/r7/bundle.tar.gz"
    assert Path(plan.extra["request"]["runtime_env"]["working_dir"]).name == "job-nobundle"
    small = RayBackend(launch(ray={"storage_path": "s3://b/runs"})).plan(bundle, "r7")
    assert small.extra["bundle_upload"] is None
    assert json.loads(shlex.split(small.extra["request"]["entrypoint"])[-1])["bundle"] == "bundle.tar.gz"


def test_bundle_round_trip_through_storage(bundle: Any, tmp_path: Path) -> None:
    """What submit copies to storage is what the job's workers fetch (pyarrow's file:// filesystem)."""
    pytest.importorskip("pyarrow")
    from mudpuppy.backends.ray import copy_to_storage
    from mudpuppy.launcher.ray_entry import fetch_bundle

    uri = f"file://{tmp_path}/storage/r1/bundle.tar.gz"
    copy_to_storage(bundle.path, uri)
    copy_to_storage(bundle.path, str(tmp_path / "shared" / "r1" / "bundle.tar.gz"))
    local = fetch_bundle(uri, tmp_path / "node")
    assert local == tmp_path / "node" / "bundle.tar.gz" and local.read_bytes() == bundle.path.read_bytes()
    assert (tmp_path / "shared" / "r1" / "bundle.tar.gz").read_bytes() == bundle.path.read_bytes()
    assert sorted(p.name for p in (tmp_path / "node").iterdir()) == ["bundle.tar.gz"]
