"""The ``launch:`` section (ours, not Axolotl's): where and on what the run happens. CLI flags override it."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from mudpuppy.launcher.config.schema.base import Section
from mudpuppy.launcher.scriptsafe import check_env_name, check_text

BackendName = Literal["local", "ssh", "slurm", "ray", "skypilot", "modal"]
# a kind may end in ! or + (Modal: H100! = exactly H100, B200+ = B200 or better)
_GPU_SPEC = re.compile(r"^(?:(?P<kind>[A-Za-z][A-Za-z0-9_.-]*[!+]?)(?::(?P<count>\d+))?|(?P<bare>\d+))$")
_SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class LaunchPart(Section):
    """Base of every ``launch:`` section: each text value in it (lists and mappings too) ends up in a rendered job
    script, so none may hold a control character (``launcher.scriptsafe``); checked per key for precise errors."""

    @field_validator("*", mode="after")
    @classmethod
    def _script_safe(cls, value: Any) -> Any:
        _check_texts(value)
        return value


def _check_texts(value: Any) -> None:
    if isinstance(value, str):
        check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_texts(key)
            _check_texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_texts(item)
    elif not isinstance(value, BaseModel | int | float | bool | None):
        _check_texts(str(value))


def parse_gpus(spec: str) -> tuple[str | None, int]:
    """Split ``H100:8`` / ``A100-80GB`` / ``4`` into (kind, count); a bare kind means one GPU."""
    m = _GPU_SPEC.match(spec.strip())
    if not m:
        raise ValueError(f"bad GPU spec {spec!r}: use KIND:COUNT like H100:8, a KIND like A10G, or a COUNT like 2")
    if m.group("bare"):
        count = int(m.group("bare"))
        kind = None
    else:
        kind = m.group("kind")
        count = int(m.group("count") or 1)
    if count < 1:
        raise ValueError(f"bad GPU spec {spec!r}: the count must be at least 1")
    return kind, count


class LocalOptions(LaunchPart):
    """``launch.local``: run on this machine under a supervisor that restarts on the requeue exit code."""

    python: str | None = Field(None, description="Interpreter to run the job with; default: this one.")
    nproc_per_node: int | None = Field(None, ge=1, description="Processes (torchrun); default: GPU count or 1.")


class SSHOptions(LaunchPart):
    """``launch.ssh``: one detached supervisor per host, torchrun rendezvous at the first host."""

    hosts: list[str] = Field(default_factory=list, description="user@host[:port] or ~/.ssh/config aliases.")
    user: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    key_file: str | None = Field(None, description="Private key; default: ssh-agent and ~/.ssh/config.")
    known_hosts: str | None = Field(None, description="known_hosts file to verify host keys against.")
    trust_on_first_use: bool = Field(False, description="Accept and record unknown host keys (off: reject).")
    connect_timeout: float = Field(10.0, gt=0)
    workdir: str = Field("~/.mudpuppy", description="Remote folder holding bundles, venvs and runs.")
    shared_fs: bool = Field(
        False, description="The hosts see this machine's current folder at the same path: relative output_dir "
        "and dataset_prepared_path resolve against it (as with `mudpuppy train`), not the run folder."
    )
    python: str | None = Field(None, description="Remote interpreter that already has mudpuppy + deps; skips the venv.")
    nproc_per_node: int | None = Field(None, ge=1)
    master_port: int = Field(29500, ge=1, le=65535)
    container: Literal["docker", "apptainer", "singularity"] = Field(
        "docker", description="How launch.image runs on each host (the host needs that tool on its PATH)."
    )
    container_python: str = Field("python3", description="Interpreter inside launch.image that has mudpuppy.")
    container_args: list[str] = Field(
        default_factory=list, description="More options for `docker run` / `apptainer exec`, e.g. ['--shm-size=16g']."
    )


class SlurmOptions(LaunchPart):
    """``launch.slurm``: rendered into ``#SBATCH`` lines; submitted from here or from ``login`` over SSH."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    time: str | None = Field(None, description="Wall-clock limit, SLURM syntax (e.g. 4:00:00 or 2-00:00:00).")
    cpus_per_task: int | None = Field(None, ge=1)
    mem: str | None = Field(None, description="Memory per node, e.g. 64G.")
    exclusive: bool = False
    whole_node: bool = Field(
        False, description="Whole-node GPU jobs: --exclusive --mem=0 (every CPU, GPU and all memory of each node)."
    )
    gpu_type: bool = Field(
        True, description="Put the GPU type of launch.gpus into --gpus-per-node exactly as written (H100:8); "
        "off: the count only, for clusters whose GRES types differ from your spelling."
    )
    signal_seconds: int = Field(120, ge=0, description="USR1 this many seconds before the time limit.")
    extra_directives: list[str] = Field(
        default_factory=list, description="More #SBATCH options, e.g. ['--reservation=big', '--comment=x']."
    )
    login: str | None = Field(None, description="Submit over SSH to this login node (uses launch.ssh settings).")
    workdir: str = Field(
        "~/.mudpuppy", description="Folder on the shared filesystem for bundles, venvs and runs ('~' is resolved "
        "at submit time, on the login node when submitting over SSH)."
    )
    python: str | None = Field(
        None, description="Interpreter on the compute nodes that has mudpuppy + deps; default: a venv built once "
        "per image spec under WORKDIR/venvs (locked with flock)."
    )
    container: Literal["pyxis", "apptainer"] = Field(
        "pyxis", description="How launch.image runs: pyxis/enroot (srun --container-image) or apptainer exec."
    )
    container_python: str = Field("python3", description="Interpreter inside launch.image that has mudpuppy.")
    container_args: list[str] = Field(
        default_factory=list, description="More options for srun (pyxis) or `apptainer exec`, e.g. ['--nv']."
    )
    nproc_per_node: int | None = Field(None, ge=1)
    master_port: int | None = Field(
        None, ge=1, le=65535, description="Rendezvous port; default: derived from the job id (15000 + id % 10000)."
    )
    array_throttle: int | None = Field(
        None, ge=1, description="Sweeps (launch --sweep): at most this many members of the job array run at once "
        "(the %N of --array); default: all. --max-parallel overrides it."
    )


class RayOptions(LaunchPart):
    """``launch.ray``: a Ray Jobs submission whose driver runs Ray Train's ``TorchTrainer`` over the bundle."""

    address: str | None = Field(None, description="Ray dashboard URL; default: $RAY_ADDRESS, else http://127.0.0.1:8265.")
    num_workers: int | None = Field(None, ge=1, description="Training workers; default: nodes x GPUs per node (or 1).")
    use_gpu: bool | None = Field(None, description="One GPU per worker; default: on when launch.gpus is set.")
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict, description="Ray resources each worker reserves, e.g. {CPU: 8, GPU: 1}."
    )
    storage_path: str | None = Field(
        None, description="Where Ray Train persists checkpoints (shared path or s3://); default: launch.volume."
    )
    workdir: str = Field(
        "/tmp/mudpuppy-ray",
        description="Per-node scratch folder for the run's outputs (WORKDIR/RUN_ID on rank 0's node, "
        "WORKDIR/RUN_ID/nodes/node-IP on the others, so nodes sharing a filesystem do not collide).",
    )
    ship_source: bool = Field(True, description="Send mudpuppy's source with the job (off: the cluster has it).")
    pip: bool = Field(False, description="Install the image's pinned packages through runtime_env pip (slow).")
    backend: Literal["gloo", "nccl"] | None = Field(None, description="torch.distributed backend; default by device.")


class SkyPilotOptions(LaunchPart):
    """``launch.skypilot``: a SkyPilot task (managed job when ``launch.spot``), rendered to YAML."""

    cloud: str | None = Field(None, description="aws, gcp, azure, lambda, runpod, kubernetes, ...; default: any.")
    region: str | None = None
    zone: str | None = None
    image_id: str | None = Field(None, description="VM or docker image (docker:IMAGE) for the nodes.")
    disk_size: int | None = Field(None, ge=10, description="OS disk in GB.")
    managed: bool | None = Field(None, description="Use `sky jobs launch` (recovers from preemption); default: spot.")
    spot_fallback: bool = Field(True, description="With spot, fall back to on-demand (any_of) when none is free.")
    cluster: str | None = Field(None, description="Cluster name for unmanaged launches; default: mudpuppy-RUN.")
    bucket: str | None = Field(
        None, description="Bucket (s3://b/prefix or gs://...) the runtime syncs checkpoints and outputs to (runs/RUN); "
        "spot/managed runs need it (or an s3/gs launch.volume)."
    )
    recovery_strategy: Literal["EAGER_NEXT_REGION", "FAILOVER"] = "EAGER_NEXT_REGION"
    max_restarts_on_errors: int | None = Field(
        None, ge=0, description="Managed-job restarts (crashes and preemptions together); default: retries."
    )
    idle_minutes_to_autostop: int | None = Field(
        None, ge=0, description="Unmanaged clusters are torn down this long after the job ends; default: 10."
    )
    python: str | None = Field(
        None, description="Interpreter of the environment SkyPilot is installed in; default: $MUDPUPPY_SKYPILOT_PYTHON "
        "or the one behind `sky` on PATH."
    )
    nproc_per_node: int | None = Field(None, ge=1)
    master_port: int = Field(29500, ge=1, le=65535)


class ModalOptions(LaunchPart):
    """``launch.modal``: a Modal function (clustered when ``launch.nodes > 1``) with a Volume for outputs."""

    app_name: str = Field("mudpuppy", description="Modal App name; runs appear under it in the dashboard.")
    volume: str = Field("mudpuppy-runs", description="Modal Volume for checkpoints and outputs (created if missing).")
    timeout: int = Field(24 * 3600, ge=10, le=24 * 3600, description="Seconds per attempt (Modal's maximum is 24h).")
    environment: str | None = Field(None, description="Modal environment; default: the profile's.")
    region: str | None = None
    cloud: str | None = None
    nonpreemptible: bool = Field(False, description="Ask Modal for non-preemptible capacity (costs more).")
    rdma: bool = Field(False, description="RDMA networking between nodes of a clustered run.")
    nproc_per_node: int | None = Field(None, ge=1)
    master_port: int = Field(29500, ge=1, le=65535)


class LaunchSection(LaunchPart):
    backend: BackendName = "local"
    name: str | None = Field(None, description="Run name shown by `mudpuppy runs`.")
    gpus: str | None = Field(None, description="GPUs per node: H100:8, A100-80GB:4, or a count.")
    nodes: int = Field(1, ge=1)
    cpus: int | None = Field(None, ge=1)
    memory: str | None = None
    spot: bool = False
    detach: bool = False
    volume: str | None = Field(None, description="file:///path, s3://bucket/prefix, gs://..., modal://name.")
    retries: int = Field(3, ge=0, description="Restarts after a preemption before the run is failed.")
    env: dict[str, str] = Field(default_factory=dict, description="Plain environment variables for the job.")
    secrets: list[str] = Field(
        default_factory=list, description="Names of secrets resolved by the backend at run time; never values."
    )
    image: str | None = Field(None, description="Container image to run in instead of a venv.")
    time: str | None = Field(None, description="Wall-clock limit (SLURM syntax); backends without one ignore it.")
    local: LocalOptions = Field(default_factory=LocalOptions)
    ssh: SSHOptions = Field(default_factory=SSHOptions)
    slurm: SlurmOptions = Field(default_factory=SlurmOptions)
    ray: RayOptions = Field(default_factory=RayOptions)
    skypilot: SkyPilotOptions = Field(default_factory=SkyPilotOptions)
    modal: ModalOptions = Field(default_factory=ModalOptions)
    entrypoint: str = Field(
        "mudpuppy.runtime", description="Python module each process runs with the bundle (tests swap it)."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Settings for backends without a typed section (ray, skypilot, modal)."
    )

    @field_validator("gpus")
    @classmethod
    def _check_gpus(cls, value: str | None) -> str | None:
        if value is not None:
            parse_gpus(str(value))
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_scalars_as_text(cls, value: Any) -> Any:
        """``OMP_NUM_THREADS: 4`` means the text "4": environment values are strings."""
        if isinstance(value, dict):
            return {k: (str(v).lower() if isinstance(v, bool) else str(v)) if isinstance(v, int | float) else v
                    for k, v in value.items()}
        return value

    @field_validator("env")
    @classmethod
    def _check_env_names(cls, value: dict[str, str]) -> dict[str, str]:
        """Names are written unquoted in ``export NAME=...`` lines: only shell identifiers are names."""
        for name in value:
            check_env_name(name)
        return value

    @field_validator("secrets")
    @classmethod
    def _check_secret_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _SECRET_NAME.match(name):
                raise ValueError(f"secret {name!r} is not an environment variable name; list names, not values")
        return value

    def gpu_kind_and_count(self) -> tuple[str | None, int]:
        return parse_gpus(self.gpus) if self.gpus else (None, 0)
