"""``ray``: one Ray Jobs submission per run; its driver (``launcher.ray_entry``) runs Ray Train's ``TorchTrainer``.

Why Jobs + Train rather than our own torchrun: Ray already owns placement, restarts and checkpoint persistence
on a Ray cluster, so the backend only says *what* to run. The job's ``runtime_env`` carries the bundle (as the
``working_dir``) and, unless the cluster already has it, mudpuppy's own source (``py_modules``: the package
folder, never the wheel, because Ray installs wheels with ``pip --target`` and their dependencies with them).
Worker failures restart the whole worker group from the last checkpoint reported to Ray
(``FailureConfig(max_failures=launch.retries)``); checkpoints land under ``storage_path/RUN_ID``.

``plan`` is pure: the job request (entrypoint, runtime_env, submission id) is data, and ``submit`` only stages
files under the state dir and hands that request to ``JobSubmissionClient.submit_job``.

Secrets: Ray stores a job's ``runtime_env`` (``env_vars`` included) and shows it in ``ray job list``, the job info
and the dashboard, and Ray Train exports its controller's and workers' runtime envs too; the Jobs API has no
private channel (no stdin for the entrypoint). So secret values travel as a 0600 file inside the uploaded
``working_dir`` package (``secret_working_dir``), which the driver reads and deletes; it hands the values to the
training workers inside the pickled training function, never through a runtime_env or ``train_loop_config``.
They reach the driver and the training workers, not Ray Train's controller actor: credentials for an ``s3://``
``storage_path`` must come from the nodes' own configuration (instance role, ``~/.aws``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from mudpuppy.backends.base import Backend, Capabilities, Handle, Plan, RunStatus, State
from mudpuppy.backends.ray_accelerators import ray_accelerator
from mudpuppy.launcher.bundle import Bundle
from mudpuppy.launcher.config.schema.launch import LaunchSection
from mudpuppy.launcher.contract import BUNDLE_SUFFIX, ENV_BUNDLE, ENV_RUN_ID, ENV_VOLUME
from mudpuppy.launcher.errors import UserError
from mudpuppy.launcher.registry import state_dir

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
BUNDLE_FILE = f"bundle{BUNDLE_SUFFIX}"
SECRETS_FILE = ".mudpuppy-secrets.json"  # in the job's working_dir; the driver deletes it once read
# Ray refuses runtime_env packages at its gRPC message size (512 MiB); the zip adds a little to the bundle.
WORKING_DIR_LIMIT = 500 * 1024 * 1024

# Ray's JobStatus values -> ours.
STATES = {
    "PENDING": State.PENDING,
    "RUNNING": State.RUNNING,
    "STOPPED": State.CANCELLED,
    "SUCCEEDED": State.SUCCEEDED,
    "FAILED": State.FAILED,
}


def map_state(native: str) -> State:
    return STATES.get(str(native).rsplit(".", 1)[-1].upper(), State.UNKNOWN)


def resolve_address(launch: LaunchSection) -> str:
    address = launch.ray.address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    if address.startswith("ray://") or "://" not in address:
        # The Jobs API talks to the dashboard over HTTP; `ray://host:10001` is the client port, not this one.
        host = address.split("://", 1)[-1].split(":")[0]
        raise UserError(
            f"Ray address {address!r} is not a dashboard URL",
            hint=f"use the Jobs API address, e.g. http://{host or '127.0.0.1'}:8265 "
            "(launch.ray.address or RAY_ADDRESS)",
        )
    return address.rstrip("/")


def storage_path(launch: LaunchSection) -> str | None:
    """Where Ray Train persists checkpoints: ``launch.ray.storage_path``, else ``launch.volume``, else Ray's default."""
    raw = launch.ray.storage_path or launch.volume
    if not raw:
        return None
    if raw.startswith("file://"):
        return raw[len("file://"):] or "/"
    if raw.startswith("modal://"):
        raise UserError(f"volume {raw!r} is a Modal volume; the ray backend needs a shared path or s3:// / gs://",
                        hint="set launch.ray.storage_path")
    return raw


def num_workers(launch: LaunchSection) -> int:
    if launch.ray.num_workers:
        return launch.ray.num_workers
    _kind, count = launch.gpu_kind_and_count()
    return launch.nodes * max(count, 1)


def job_spec(launch: LaunchSection, run_id: str, *, keep: int | None = None) -> dict[str, Any]:
    """What the driver inside the job needs (plain JSON; no secrets). ``keep`` is the config's save_total_limit."""
    kind, count = launch.gpu_kind_and_count()
    use_gpu = launch.ray.use_gpu if launch.ray.use_gpu is not None else count > 0
    resources = dict(sorted(launch.ray.resources_per_worker.items()))
    if use_gpu and kind and not any(key.startswith("accelerator_type:") for key in resources):
        resources[f"accelerator_type:{ray_accelerator(kind)}"] = 0.001  # Ray's convention for pinning a GPU model
    storage = storage_path(launch)
    if launch.nodes > 1 and not storage:
        # Ray Train's default storage is each node's local ~/ray_results: rank 0's checkpoints would land on one
        # node and a restarted group on another could not read them.
        raise UserError(f"launch.nodes is {launch.nodes} but the ray backend has no shared storage for checkpoints",
                        hint="set launch.ray.storage_path (or launch.volume) to an NFS path or s3:// / gs:// URI")
    return {
        "run_id": run_id,
        "bundle": BUNDLE_FILE,
        "entrypoint": launch.entrypoint,
        "num_workers": num_workers(launch),
        "use_gpu": use_gpu,
        "resources_per_worker": resources,
        "storage_path": storage,
        "max_failures": launch.retries,
        "num_to_keep": keep,
        "workdir": launch.ray.workdir.rstrip("/"),
        "backend": launch.ray.backend or ("nccl" if use_gpu else "gloo"),
    }


def stage_dir(bundle_digest: str) -> Path:
    return state_dir() / "ray" / bundle_digest[:16]


class RayBackend(Backend):
    name = "ray"
    capabilities = Capabilities(
        multi_node=True, requeue=True,
        notes="Ray Jobs + Ray Train; restarts the worker group from the last reported checkpoint",
    )

    def plan(self, bundle: Bundle, run_id: str) -> Plan:
        launch = self.launch
        address = resolve_address(launch)
        keep = (yaml.safe_load(bundle.config_text) or {}).get("save_total_limit")
        spec = job_spec(launch, run_id, keep=keep)
        upload = bundle_upload(bundle.path, spec["storage_path"], run_id)
        if upload:
            spec["bundle"] = upload
        entrypoint = "python -m mudpuppy.launcher.ray_entry"
        if launch.secrets:
            entrypoint += f" --secrets-file {SECRETS_FILE}"
        entrypoint += f" --spec {shlex.quote(json.dumps(spec, sort_keys=True))}"
        staged = stage_dir(bundle.digest)
        env = dict(sorted(launch.env.items()))
        env[ENV_RUN_ID] = run_id
        env[ENV_BUNDLE] = BUNDLE_FILE
        if launch.volume:
            env[ENV_VOLUME] = launch.volume
        runtime_env: dict[str, Any] = {"working_dir": str(staged / ("job-nobundle" if upload else "job")),
                                       "env_vars": env}
        if launch.ray.ship_source:
            runtime_env["py_modules"] = [str(staged / "src" / "mudpuppy")]
        if launch.ray.pip:
            runtime_env["pip"] = [p for p in bundle.image.get("packages", []) if not p.startswith("mudpuppy")]
        request = {
            "entrypoint": entrypoint,
            "submission_id": f"mudpuppy-{run_id}",
            "runtime_env": runtime_env,
            "metadata": {"mudpuppy_run_id": run_id, "mudpuppy_bundle": bundle.digest[:16]},
        }
        script = "\n".join([
            f"# Generated by mudpuppy: a Ray job submitted to {address}",
            f"# runtime_env: {json.dumps(runtime_env, sort_keys=True)}",
            entrypoint,
        ])
        return Plan(
            backend=self.name, run_id=run_id, bundle_path=str(bundle.path), bundle_digest=bundle.digest,
            script=script + "\n", workdir=f"{spec['workdir']}/{run_id}", session=address, env=env,
            secrets=tuple(launch.secrets), retries=launch.retries,
            extra={"request": request, "stage": str(staged), "wheel": bundle.image.get("wheel"),
                   "storage_path": spec["storage_path"], "bundle_upload": upload},
        )

    # ------------------------------------------------------------------------------------------ submit
    def submit(self, plan: Plan) -> Handle:
        request = json.loads(json.dumps(plan.extra["request"]))  # a copy: the working_dir may change below
        for name in plan.secrets:
            if name not in os.environ:
                raise UserError(f"secret {name} is not set in your environment", hint="export it, then relaunch")
        client = self._client(plan.session)  # before staging: no cluster, nothing written
        upload = plan.extra.get("bundle_upload")
        stage(Path(plan.bundle_path), Path(plan.extra["stage"]), plan.extra.get("wheel"),
              ship_source="py_modules" in request["runtime_env"], with_bundle=not upload)
        if upload:
            size = Path(plan.bundle_path).stat().st_size
            print(f"bundle is {size / 2**20:.0f} MiB, over Ray's working_dir upload limit: copying it to {upload}",
                  file=sys.stderr, flush=True)
            copy_to_storage(Path(plan.bundle_path), upload)
        values = {name: os.environ[name] for name in plan.secrets}
        with contextlib.ExitStack() as stack:
            if values:  # never in runtime_env.env_vars: Ray shows those in `ray job list` and the dashboard
                request["runtime_env"]["working_dir"] = str(stack.enter_context(secret_working_dir(
                    Path(plan.extra["stage"]), values, with_bundle=not upload)))
            try:
                job_id = client.submit_job(**request)
            except Exception as exc:  # Ray raises RuntimeError with the HTTP body for refused requests
                raise UserError(f"the Ray cluster at {plan.session} refused the job: {_first_line(exc)}") from None
        return Handle(self.name, plan.session, job_id)

    def _client(self, address: str) -> Any:
        try:
            from ray.job_submission import JobSubmissionClient
        except ImportError:
            raise UserError("the ray backend needs Ray", hint="pip install 'mudpuppy[ray]'") from None
        try:
            return JobSubmissionClient(address)
        except Exception as exc:
            raise UserError(
                f"no Ray cluster answers at {address}: {_first_line(exc)}",
                hint="start one with `ray start --head`, or set launch.ray.address / RAY_ADDRESS",
            ) from None

    # ------------------------------------------------------------------------------------------ the run
    def status(self, handle: Handle) -> RunStatus:
        info = self._client(handle.session).get_job_info(handle.id)
        native = str(getattr(info.status, "value", info.status))
        state = map_state(native)
        reason = info.message if state in (State.FAILED, State.CANCELLED) else None
        return RunStatus(state, reason=reason, exit_code=getattr(info, "driver_exit_code", None), native=native)

    def logs(self, handle: Handle, follow: bool = False) -> Iterator[str]:
        client = self._client(handle.session)
        if not follow:
            yield from client.get_job_logs(handle.id).splitlines(keepends=True)
            return
        import asyncio

        loop = asyncio.new_event_loop()
        stream = client.tail_job_logs(handle.id)
        try:
            while True:
                try:
                    chunk = loop.run_until_complete(stream.__anext__())
                except StopAsyncIteration:
                    return
                yield from chunk.splitlines(keepends=True)
        finally:
            loop.run_until_complete(stream.aclose())
            loop.close()

    def cancel(self, handle: Handle) -> None:
        client = self._client(handle.session)
        if not client.stop_job(handle.id):
            info = client.get_job_info(handle.id)
            if not map_state(str(getattr(info.status, "value", info.status))).terminal:
                raise UserError(f"Ray did not stop job {handle.id}")

    def output_location(self, plan: Plan, output_dir: str) -> str:
        root = plan.extra["storage_path"] or "~/ray_results (on the head node)"
        return f"{root.rstrip('/')}/{plan.run_id} (final outputs: the last checkpoint, final-*)"


def bundle_upload(bundle: Path, storage: str | None, run_id: str) -> str | None:
    """Where a bundle too large for the job's ``working_dir`` goes instead (``STORAGE/RUN_ID/bundle.tar.gz``).

    None when it fits. Ray would refuse the upload with a gRPC size error only after staging and contacting the
    cluster; here the size decides at plan time, and without storage the user gets one line saying what to set.
    """
    size = bundle.stat().st_size
    if size <= WORKING_DIR_LIMIT:
        return None
    if not storage:
        raise UserError(f"bundle {bundle.name} is {size / 2**20:.0f} MiB, over Ray's "
                        f"{WORKING_DIR_LIMIT // 2**20} MiB working_dir upload limit",
                        hint="set launch.ray.storage_path (shared path or s3:// / gs://) so it goes through storage, "
                        "or load large data/models from there instead of bundling them")
    return f"{storage.rstrip('/')}/{run_id}/{BUNDLE_FILE}"


def copy_to_storage(source: Path, dest: str) -> None:
    """Copy the bundle to a shared path or object store URI with pyarrow's filesystems (Ray Train's own)."""
    if "://" not in dest:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        return
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(dest)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    fs.copy_files(str(source), path, source_filesystem=fs.LocalFileSystem(), destination_filesystem=filesystem)


def stage(bundle: Path, target: Path, wheel: str | None, *, ship_source: bool, with_bundle: bool = True) -> None:
    """``target/job/bundle.tar.gz`` and ``target/src/mudpuppy`` (from the bundle's wheel), each made once.

    ``with_bundle=False`` (a bundle that goes through storage) leaves ``job`` empty but present: the job still
    needs a working_dir of its own.
    """
    job = target / ("job" if with_bundle else "job-nobundle")
    if with_bundle and not (job / BUNDLE_FILE).is_file():
        _atomic_dir(job, lambda tmp: _link_or_copy(bundle, tmp / BUNDLE_FILE))
    elif not with_bundle:
        job.mkdir(parents=True, exist_ok=True)
    if ship_source and not (target / "src" / "mudpuppy").is_dir():
        if not wheel:
            raise UserError("the bundle carries no mudpuppy wheel to ship to the Ray cluster",
                            hint="set launch.ray.ship_source: false when the cluster has mudpuppy installed")
        _atomic_dir(target / "src", lambda tmp: _unpack_wheel(bundle, wheel, tmp))


@contextlib.contextmanager
def secret_working_dir(staged: Path, values: dict[str, str], *, with_bundle: bool = True) -> Iterator[Path]:
    """A private copy of the job folder (the bundle, hard-linked) plus ``SECRETS_FILE`` (0600), for one submission.

    Ray zips the ``working_dir`` and uploads it to the cluster inside ``submit_job``, so the folder is removed as
    soon as that returns. Ray (2.60) restores the 0600 mode when it unpacks the zip; the job's driver reads the file
    and deletes it (``launcher.ray_entry``). A random nonce in the file keeps the package's content hash, which
    Ray shows as the working_dir URI, from being a hash of the secret values alone.
    """
    staged.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".job-secrets-", dir=staged))  # mode 0700
    try:
        if with_bundle:  # a bundle over the working_dir limit went through storage instead
            _link_or_copy(staged / "job" / BUNDLE_FILE, folder / BUNDLE_FILE)
        fd = os.open(folder / SECRETS_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"nonce": secrets.token_hex(16), "values": values}, fh)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _atomic_dir(final: Path, fill: Any) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        fill(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def _unpack_wheel(bundle: Path, wheel: str, dest: Path) -> None:
    import tarfile

    with tarfile.open(bundle, "r:*") as tar:
        member = tar.extractfile(wheel)
        if member is None:
            raise UserError(f"bundle {bundle.name} has no {wheel}")
        data = member.read()
    whl = dest / "mudpuppy.whl"
    whl.write_bytes(data)
    with zipfile.ZipFile(whl) as zf:
        names = [n for n in zf.namelist() if n.startswith("mudpuppy/")]
        zf.extractall(dest, members=names)
    whl.unlink()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
