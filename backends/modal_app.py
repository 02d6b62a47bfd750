"""The Modal objects for one run (App, Image, Volume, Secrets, the function) and the function's body.

``build_app(spec)`` turns the plain ``spec`` from ``ModalBackend.plan`` into Modal objects without talking to
Modal (they are lazy until ``app.run``), so tests assert every setting offline. ``run_job`` is the body the
container runs; it takes the volume folder and its commit/reload calls as arguments, so a test runs it
in-process on a local folder. API notes for modal 1.x (pinned in the ``modal`` extra): ``Image.uv_pip_install``,
``Image.add_local_file(copy=True)``, ``modal.clustered(size=, rdma=)`` (formerly ``modal.experimental.clustered``,
now deprecated there), ``modal.Cluster.from_context()`` (replaces ``experimental.get_cluster_info``),
``FunctionCall.logs`` (added in 1.x; older clients only had ``modal app logs``). ``Stub``, ``Mount`` and
``keep_warm``/``concurrency_limit`` were removed before 1.0 and are not used.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mudpuppy.launcher.contract import ENV_ATTEMPT, ENV_WORKDIR, EXIT_OK, EXIT_REQUEUE, EXIT_USER_ERROR
from mudpuppy.launcher.scriptsafe import require_safe
from mudpuppy.launcher.volume_flush import ENV_VOLUME_FLUSH, FlushServer

FUNCTION_NAME = "train"


class Requeue(RuntimeError):
    """Raised in the container when the runtime exits 75: Modal's retry policy starts a fresh attempt."""


@dataclass
class ModalParts:
    app: Any
    function: Any
    image: Any
    volume: Any
    secrets: list[Any]
    settings: dict[str, Any] = field(default_factory=dict)  # what app.function() was given
    cluster: dict[str, Any] | None = None  # what modal.clustered() was given, for multi-node runs


def build_image(spec: dict[str, Any]) -> Any:
    import modal

    image_spec = spec["image"]
    # Modal writes env values as Dockerfile ENV lines: a newline would start a new instruction. Checked first.
    for key, value in (image_spec.get("env") or {}).items():
        require_safe(f"{key}={value}", f"launch.env.{key}")
    base = image_spec["base_image"]
    python = image_spec["python"]
    if base.startswith("python:"):
        image = modal.Image.debian_slim(python_version=python)
    else:  # e.g. a CUDA devel image for flash-attn builds; Modal adds the Python
        image = modal.Image.from_registry(base, add_python=python)
    packages = [p for p in image_spec.get("packages", []) if not p.lower().startswith("mudpuppy")]
    if packages:
        image = image.uv_pip_install(*packages)
    if image_spec.get("wheel"):
        # only the wheel goes into the image (same mudpuppy, same layer): the bundle changes every run
        wheel = _extract_wheel(spec["bundle_path"], image_spec["wheel"])
        remote_wheel = f"/mudpuppy/wheels/{wheel.name}"
        image = image.add_local_file(str(wheel), remote_wheel, copy=True)
        image = image.run_commands(wheel_install_command(remote_wheel))
    if image_spec.get("env"):
        image = image.env(dict(image_spec["env"]))
    # the bundle is attached when the container starts (copy=False: not an image layer, so no rebuild per run)
    return image.add_local_file(spec["bundle_path"], spec["remote_bundle"], copy=False)


def _extract_wheel(bundle_path: str, member: str) -> Path:
    import tarfile
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="mudpuppy-wheel-"))
    with tarfile.open(bundle_path, "r:gz") as tar:
        source = tar.extractfile(member)
        if source is None:
            raise FileNotFoundError(f"{member} is not a file in {bundle_path}")
        target = folder / Path(member).name
        target.write_bytes(source.read())
    return target


def wheel_install_command(remote_wheel: str) -> str:
    """The image build step that installs mudpuppy's wheel (a shell command: the path is quoted)."""
    return f"python -m pip install --no-deps {shlex.quote(remote_wheel)}"


def build_app(spec: dict[str, Any]) -> ModalParts:
    """App, Image, Volume, Secrets and the ``train`` function for ``spec``: offline, nothing is created yet."""
    import modal

    app = modal.App(spec["app_name"])
    image = build_image(spec)
    volume = modal.Volume.from_name(spec["volume"], create_if_missing=True, environment_name=spec.get("environment"))
    secrets = [modal.Secret.from_name(name, environment_name=spec.get("environment")) for name in spec["secrets"]]
    retries = spec["retries"]
    settings: dict[str, Any] = {
        "image": image,
        "gpu": spec["gpu"],
        "timeout": spec["timeout"],
        "retries": modal.Retries(max_retries=retries, initial_delay=10.0, backoff_coefficient=2.0, max_delay=60.0)
        if retries else None,
        "volumes": {spec["mount"]: volume},
        "secrets": secrets,
        "cpu": spec.get("cpu"),
        "memory": spec.get("memory"),
        "region": spec.get("region"),
        "cloud": spec.get("cloud"),
        "nonpreemptible": spec.get("nonpreemptible", False),
        "serialized": True,  # the container has mudpuppy from the bundle's wheel; train_remote is found by name
        "include_source": False,
        "name": FUNCTION_NAME,
        "single_use_containers": True,  # a fresh container per attempt (formerly max_inputs=1)
    }
    body: Any = train_remote
    cluster = None
    if spec["nodes"] > 1:
        cluster = {"size": spec["nodes"], "rdma": bool(spec.get("rdma", False))}
        body = modal.clustered(**cluster)(body)
    function = app.function(**settings)(body)
    return ModalParts(app=app, function=function, image=image, volume=volume, secrets=secrets, settings=settings,
                      cluster=cluster)


# ---------------------------------------------------------------- in the container


def _volume_hooks(name: str, environment: str | None = None) -> tuple[Callable[[], None], Callable[[], None]]:
    import modal

    volume = modal.Volume.from_name(name, environment_name=environment)
    return volume.commit, volume.reload


def _cluster_position() -> tuple[int, str]:
    import modal

    cluster = modal.Cluster.from_context()
    return int(cluster.container_rank()), str(cluster.container_ips()[0])


def train_remote(job: dict[str, Any]) -> dict[str, Any]:
    """The Modal function: the mounted volume, its commit/reload, and (clustered) this container's rank."""
    commit, reload = _volume_hooks(job["volume"], job.get("environment"))
    position = _cluster_position() if job["nodes"] > 1 else (0, "127.0.0.1")
    return run_job(job, Path(job["mount"]), commit=commit, reload=reload, position=position)


def run_job(job: dict[str, Any], volume_root: Path, *, commit: Callable[[], None], reload: Callable[[], None],
            position: tuple[int, str] = (0, "127.0.0.1"), python: str | None = None,
            poll_s: float = 2.0) -> dict[str, Any]:
    """Run the bundle with outputs on the volume; commit after each checkpoint and at the end.

    Returns ``{"exit_code": 0 | 2, ...}`` for a finished or user-failed run (Modal must not retry either) and
    raises ``Requeue`` (exit 75) or ``RuntimeError`` (a crash) so Modal's retry policy starts a new attempt,
    which reloads the volume and resumes from the newest complete checkpoint there.
    """
    reload()
    node_rank, head = position
    workdir = volume_root / "runs" / job["run_id"]
    workdir.mkdir(parents=True, exist_ok=True)
    attempt = _next_attempt(workdir) if node_rank == 0 else 0
    # the runtime asks for commits/reloads at checkpoint time through a local folder (launcher.volume_flush):
    # each node commits its shards, then rank 0 reloads, writes the manifest and commits
    flush_dir = Path(tempfile.mkdtemp(prefix="mudpuppy-flush-"))
    flusher = FlushServer(flush_dir, lambda: commit_with_retries(commit), lambda: commit_with_retries(reload))
    env = {**os.environ, **job["env"], ENV_WORKDIR: str(workdir), ENV_ATTEMPT: str(attempt),
           ENV_VOLUME_FLUSH: str(flush_dir)}
    command = [
        python or sys.executable, "-m", "mudpuppy.launcher.node_entry",
        f"--nnodes={job['nodes']}", f"--nproc-per-node={job['nproc']}", f"--node-rank={node_rank}",
        f"--master-addr={head}", f"--master-port={job['master_port']}", f"--module={job['entrypoint']}",
        job["bundle"],
    ]
    print(f"[mudpuppy] attempt {attempt} node {node_rank}/{job['nodes']}: outputs in {workdir}", flush=True)
    proc = subprocess.Popen(command, cwd=workdir, env=env)
    # every node commits its own writes (a sharded checkpoint has files from each); the manifest is written last
    watcher = _CheckpointCommitter(workdir, commit, poll_s, head=node_rank == 0)
    watcher.start()
    flusher.start()
    try:
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
        flusher.stop()
        watcher.stop()
        watcher.failures.extend(flusher.failures)
        shutil.rmtree(flush_dir, ignore_errors=True)
        final = commit_with_retries(commit)  # everything written so far, incl. a preempted run's last checkpoint
        if final:
            watcher.failures.append(final)
    result = {"exit_code": code, "workdir": str(workdir), "attempt": attempt,
              "checkpoints_committed": watcher.committed, "commit_failures": watcher.failures}
    for failure in watcher.failures:
        print(f"[mudpuppy] volume commit failed: {failure}", file=sys.stderr, flush=True)
    if code in (EXIT_OK, EXIT_USER_ERROR):
        return result  # finished (or a user error): never a retry, even when the last commit failed
    if code == EXIT_REQUEUE:
        raise Requeue(f"preempted with a checkpoint saved (attempt {attempt}); Modal will retry")
    raise RuntimeError(f"the runtime exited {code} (attempt {attempt})")


def _next_attempt(workdir: Path) -> int:
    marker = workdir / ".mudpuppy-attempts"
    count = int(marker.read_text()) + 1 if marker.is_file() else 0
    tmp = marker.with_name(f"{marker.name}.tmp")
    tmp.write_text(str(count))
    os.replace(tmp, marker)
    return count


COMMIT_ATTEMPTS, COMMIT_DELAY_S = 5, 2.0  # 2+4+8+16 s of backoff before a commit counts as failed


def commit_with_retries(commit: Callable[[], None], attempts: int | None = None, delay_s: float | None = None,
                        sleep: Callable[[float], None] | None = None) -> str | None:
    """``Volume.commit()`` fails now and then (e.g. files open during a reload): try again with backoff.
    Returns None when a commit went through, else the last error as one line."""
    import time

    attempts = COMMIT_ATTEMPTS if attempts is None else attempts
    delay_s = COMMIT_DELAY_S if delay_s is None else delay_s
    error = None
    for attempt in range(attempts):
        try:
            commit()
            return None
        except Exception as exc:  # Modal raises its own errors; any of them is worth another try
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if attempt + 1 < attempts:
                (sleep or time.sleep)(delay_s * 2**attempt)
    return error


class _CheckpointCommitter:
    """Commits the volume whenever a new checkpoint manifest appears (the manifest is written last). A failed
    commit is retried and reported; the watcher keeps going, and the checkpoint is committed again next time."""

    def __init__(self, workdir: Path, commit: Callable[[], None], poll_s: float, head: bool = True) -> None:
        # the head node writes manifests; another node sees only its own shards, so it commits on new checkpoints
        self.pattern = "**/checkpoint-*/mudpuppy-manifest.json" if head else "**/checkpoint-*/*"
        self.workdir = workdir
        self.commit = commit
        self.poll_s = poll_s
        self.committed: list[str] = []
        self.failures: list[str] = []
        self._seen = set(self._manifests())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mudpuppy-volume-commit", daemon=True)

    def _manifests(self) -> list[str]:
        return sorted({str(p.parent.relative_to(self.workdir)) for p in self.workdir.glob(self.pattern)})

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.scan()

    def scan(self) -> None:
        new = [m for m in self._manifests() if m not in self._seen]
        if new:
            error = commit_with_retries(self.commit)
            if error:
                self.failures.append(error)
                return  # not marked seen: the next scan commits them again
            self._seen.update(new)
            self.committed.extend(new)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.scan()
