"""The ``launch:`` section (ours, not Axolotl's): where and on what the run happens. CLI flags override it."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from mudpuppy.launcher.config.schema.base import Section

BackendName = Literal["local", "ssh", "slurm", "ray", "skypilot", "modal"]
_GPU_SPEC = re.compile(r"^(?:(?P<kind>[A-Za-z][A-Za-z0-9_.-]*)(?::(?P<count>\d+))?|(?P<bare>\d+))$")
_SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


class LocalOptions(Section):
    """``launch.local``: run on this machine under a supervisor that restarts on the requeue exit code."""

    python: str | None = Field(None, description="Interpreter to run the job with; default: this one.")
    nproc_per_node: int | None = Field(None, ge=1, description="Processes (torchrun); default: GPU count or 1.")


class SSHOptions(Section):
    """``launch.ssh``: one detached supervisor per host, torchrun rendezvous at the first host."""

    hosts: list[str] = Field(default_factory=list, description="user@host[:port] or ~/.ssh/config aliases.")
    user: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    key_file: str | None = Field(None, description="Private key; default: ssh-agent and ~/.ssh/config.")
    known_hosts: str | None = Field(None, description="known_hosts file to verify host keys against.")
    trust_on_first_use: bool = Field(False, description="Accept and record unknown host keys (off: reject).")
    connect_timeout: float = Field(10.0, gt=0)
    workdir: str = Field("~/.mudpuppy", description="Remote folder holding bundles, venvs and runs.")
    python: str | None = Field(None, description="Remote interpreter that already has mudpuppy + deps; skips the venv.")
    nproc_per_node: int | None = Field(None, ge=1)
    master_port: int = Field(29500, ge=1, le=65535)


class SlurmOptions(Section):
    """``launch.slurm``: rendered into ``#SBATCH`` lines; submitted from here or from ``login`` over SSH."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    time: str | None = Field(None, description="Wall-clock limit, SLURM syntax (e.g. 4:00:00 or 2-00:00:00).")
    cpus_per_task: int | None = Field(None, ge=1)
    mem: str | None = Field(None, description="Memory per node, e.g. 64G.")
    exclusive: bool = False
    signal_seconds: int = Field(120, ge=0, description="USR1 this many seconds before the time limit.")
    extra_directives: list[str] = Field(
        default_factory=list, description="More #SBATCH options, e.g. ['--reservation=big', '--comment=x']."
    )
    login: str | None = Field(None, description="Submit over SSH to this login node (uses launch.ssh settings).")
    workdir: str = Field("~/.mudpuppy", description="Folder on the shared filesystem for bundles and runs.")
    python: str | None = Field(None, description="Interpreter on the compute nodes that has mudpuppy + deps.")
    nproc_per_node: int | None = Field(None, ge=1)
    master_port: int = Field(29500, ge=1, le=65535)


class LaunchSection(Section):
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

    @field_validator("secrets")
    @classmethod
    def _check_secret_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _SECRET_NAME.match(name):
                raise ValueError(f"secret {name!r} is not an environment variable name; list names, not values")
        return value

    def gpu_kind_and_count(self) -> tuple[str | None, int]:
        return parse_gpus(self.gpus) if self.gpus else (None, 0)
