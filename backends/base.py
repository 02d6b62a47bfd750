"""The backend interface (TorchX's shape): ``submit = schedule(plan(...))``.

``plan`` is pure and returns plain data (the exact script that will be submitted), so ``--dry-run`` prints the
very object ``submit`` receives and cannot drift from it. Every backend maps its native states to one
``State`` enum through a small table, and states what it cannot do in ``Capabilities``.
"""

from __future__ import annotations

import enum
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from mudpuppy.launcher.errors import UserError

if TYPE_CHECKING:
    from mudpuppy.launcher.bundle import Bundle
    from mudpuppy.launcher.config.schema.launch import LaunchSection


class State(str, enum.Enum):
    SUBMITTED = "submitted"
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def terminal(self) -> bool:
        return self in (State.SUCCEEDED, State.FAILED, State.CANCELLED)


@dataclass(frozen=True)
class Capabilities:
    cancel: bool = True
    logs: bool = True
    follow_logs: bool = True
    multi_node: bool = False
    requeue: bool = True
    notes: str = ""


@dataclass(frozen=True)
class Handle:
    """``backend://session/id``: session is where the job lives (host, cluster login), id its native id."""

    backend: str
    session: str
    id: str

    def __str__(self) -> str:
        return f"{self.backend}://{self.session}/{self.id}"

    @classmethod
    def parse(cls, text: str) -> Handle:
        backend, sep, rest = text.partition("://")
        session, slash, native = rest.rpartition("/")
        if not sep or not slash or not backend or not native:
            raise ValueError(f"bad handle {text!r}: expected backend://session/id")
        return cls(backend, session, native)


@dataclass(frozen=True)
class Plan:
    """Everything ``submit`` will do, as data. ``script`` is the main text (sbatch script, launch script)."""

    backend: str
    run_id: str
    bundle_path: str
    bundle_digest: str
    script: str
    workdir: str
    session: str
    hosts: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    retries: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        """The human-readable dry run: a header of facts, then the script verbatim."""
        facts = {k: v for k, v in asdict(self).items() if k != "script"}
        head = "\n".join(f"# {key}: {json.dumps(value, sort_keys=True)}" for key, value in facts.items())
        return f"{head}\n{self.script}"


@dataclass(frozen=True)
class RunStatus:
    state: State
    reason: str | None = None
    attempts: int | None = None
    exit_code: int | None = None
    native: str | None = None


class Backend(ABC):
    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    keep_resources: bool = False  # ``cancel --keep``: leave machines a backend created for the run up

    def __init__(self, launch: LaunchSection) -> None:
        self.launch = launch

    @abstractmethod
    def plan(self, bundle: Bundle, run_id: str) -> Plan:
        """Pure: same bundle + launch section + run id -> same plan; no network, no credentials."""

    @abstractmethod
    def submit(self, plan: Plan) -> Handle: ...

    @abstractmethod
    def status(self, handle: Handle) -> RunStatus: ...

    @abstractmethod
    def logs(self, handle: Handle, follow: bool = False) -> Iterator[str]: ...

    @abstractmethod
    def cancel(self, handle: Handle) -> None: ...

    def output_location(self, plan: Plan, output_dir: str) -> str:
        """Where outputs land; a relative ``output_dir`` resolves against ``plan.extra["output_base"]`` (the folder
        the user launched from, for backends that set it) or else the run folder."""
        base = plan.extra.get("output_base") or plan.workdir
        path = output_dir if output_dir.startswith("/") else f"{base}/{output_dir.removeprefix('./')}"
        return f"{plan.session}:{path}"


# name -> (module, class); imported on first use so a missing SDK only matters to the backend that needs it.
BACKENDS: dict[str, tuple[str, str]] = {
    "local": ("mudpuppy.backends.local", "LocalBackend"),
    "ssh": ("mudpuppy.backends.ssh", "SSHBackend"),
    "slurm": ("mudpuppy.backends.slurm", "SlurmBackend"),
    "ray": ("mudpuppy.backends.ray", "RayBackend"),
    "skypilot": ("mudpuppy.backends.skypilot", "SkyPilotBackend"),
    "modal": ("mudpuppy.backends.modal", "ModalBackend"),
}


def backend_class(name: str) -> type[Backend]:
    import importlib

    entry = BACKENDS.get(name)
    if entry is None:
        known = ", ".join(sorted(BACKENDS))
        raise UserError(f"backend {name!r} is not available here", hint=f"available: {known}")
    module = importlib.import_module(entry[0])
    cls: type[Backend] = getattr(module, entry[1])
    return cls


def get_backend(name: str, launch: LaunchSection) -> Backend:
    return backend_class(name)(launch)
