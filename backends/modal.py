"""``modal``: one Modal function call per run, in a detached app; outputs and checkpoints on a Modal Volume.

``plan`` validates the GPU spec against Modal's GPU types and limits and returns plain data (the spec printed
by ``--dry-run``); ``submit`` checks for a Modal token, builds the objects (``backends.modal_app``), starts a
detached ephemeral app and spawns the function. Preemption and crashes: the function raises on exit 75 or a
crash, and ``modal.Retries`` (``launch.retries``) runs it again in a fresh container, which reloads the volume
and resumes from the newest complete checkpoint there (Modal also reschedules inputs it preempted itself).
``launch.nodes > 1`` uses ``modal.clustered`` (multi-node is in preview on Modal: it needs all GPUs of each
host, e.g. ``H100:8``, and workspace access to clusters).

Nothing half-created: the token, GPU spec and secrets are checked before ``app.run``; if the spawn fails the
ephemeral app stops with the ``with`` block. The volume is created on first use and kept on purpose (it holds
every run's outputs); remove it with ``modal volume delete <name>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from mudpuppy.backends.base import Backend, Capabilities, Handle, Plan, RunStatus, State
from mudpuppy.backends.command import job_env, nproc_per_node
from mudpuppy.launcher.bundle import Bundle
from mudpuppy.launcher.config.schema.launch import LaunchSection
from mudpuppy.launcher.contract import EXIT_USER_ERROR
from mudpuppy.launcher.errors import UserError

REMOTE_BUNDLE_DIR = "/mudpuppy/bundles"
VOLUME_MOUNT = "/vol"
HF_CACHE = "hf-cache"  # HF_HOME, under the volume
# Modal GPU types and the most one container may ask for (modal.com/docs/guide/gpu). A type may carry Modal's
# suffix: ``H100!`` pins exactly H100 (no automatic upgrade to H200), ``B200+`` allows B200 or better.
GPU_LIMITS = {
    "T4": 8, "L4": 8, "A10": 4, "A10G": 4, "L40S": 8, "A100": 8, "A100-40GB": 8, "A100-80GB": 8,
    "RTX-PRO-6000": 8, "H100": 8, "H200": 8, "B200": 8,
}
SUFFIXES = {"H100": "!", "B200": "+"}  # the suffix Modal accepts on each type
CLUSTER_GPUS = 8  # a clustered (multi-node) function takes every GPU of each host


def modal_gpu(launch: LaunchSection) -> str | None:
    kind, count = launch.gpu_kind_and_count()
    if not count:
        return None
    if kind is None:
        raise UserError(f"launch.gpus {launch.gpus!r}: Modal needs the GPU type", hint="e.g. H100:8 or A10G")
    name = kind.upper()
    base, suffix = (name[:-1], name[-1]) if name[-1] in "!+" else (name, "")
    limit = GPU_LIMITS.get(base)
    if limit is None or (suffix and SUFFIXES.get(base) != suffix):
        known = list(GPU_LIMITS) + [k + v for k, v in SUFFIXES.items()]
        raise UserError(f"launch.gpus {launch.gpus!r}: Modal has no GPU type {kind!r}",
                        hint="one of " + ", ".join(known))
    if count > limit:
        raise UserError(f"launch.gpus {launch.gpus!r}: a Modal container has at most {limit} {base} GPUs",
                        hint=f"use {base}:{limit} and launch.nodes for more")
    return f"{name}:{count}"


def _memory_mib(text: str) -> int:
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(M|MB|MiB|G|GB|GiB)?\s*", text, re.I)
    if not m:
        raise UserError(f"launch.memory {text!r}: use a size like 64G or 2048M")
    value, unit = float(m.group(1)), (m.group(2) or "G").upper()
    return int(value * 1024) if unit.startswith("G") else int(value)


def modal_spec(launch: LaunchSection, run_id: str, bundle: Bundle) -> dict[str, Any]:
    """Everything ``build_app`` and the container need, as JSON-able data (secret names only)."""
    opts = launch.modal
    gpu = modal_gpu(launch)
    if launch.nodes > 1 and gpu is None:
        raise UserError("launch.nodes > 1 on Modal needs GPUs (clustered functions are GPU-only)",
                        hint="set launch.gpus, e.g. H100:8")
    if launch.nodes > 1 and launch.gpu_kind_and_count()[1] < CLUSTER_GPUS:
        raise UserError(f"launch.gpus {launch.gpus!r} with launch.nodes {launch.nodes}: a clustered Modal function "
                        f"takes all {CLUSTER_GPUS} GPUs of each host", hint=f"use {gpu.split(':')[0]}:{CLUSTER_GPUS}"
                        if gpu else None)
    if opts.nonpreemptible and gpu is not None:
        raise UserError("launch.modal.nonpreemptible: Modal offers non-preemptible capacity only to CPU functions",
                        hint="remove it (preempted GPU runs resume from their last checkpoint) or drop launch.gpus")
    remote_bundle = f"{REMOTE_BUNDLE_DIR}/{bundle.name}"
    mount = f"{VOLUME_MOUNT}/{opts.volume}"
    env = job_env(launch, run_id, f"{mount}/runs/{run_id}", remote_bundle)
    # model/tokenizer downloads persist on the volume, so a retry does not fetch them again
    env.setdefault("HF_HOME", f"{mount}/{HF_CACHE}")
    job = {
        "run_id": run_id, "bundle": remote_bundle, "env": env, "nodes": launch.nodes,
        "nproc": nproc_per_node(launch, opts.nproc_per_node), "master_port": opts.master_port,
        "entrypoint": launch.entrypoint, "volume": opts.volume, "mount": mount, "environment": opts.environment,
    }
    return {
        "app_name": opts.app_name, "environment": opts.environment, "volume": opts.volume, "mount": mount,
        "gpu": gpu, "timeout": opts.timeout, "retries": launch.retries, "nodes": launch.nodes, "rdma": opts.rdma,
        "cpu": float(launch.cpus) if launch.cpus else None,
        "memory": _memory_mib(launch.memory) if launch.memory else None,
        "region": opts.region, "cloud": opts.cloud, "nonpreemptible": opts.nonpreemptible,
        "secrets": sorted(set(launch.secrets)), "image": bundle.image, "bundle_path": str(bundle.path),
        "remote_bundle": remote_bundle, "job": job,
    }


def require_token() -> None:
    """A Modal token (``modal token new`` / MODAL_TOKEN_ID+SECRET) must exist before anything is built."""
    try:
        from modal.config import config
    except ImportError:
        raise UserError("the modal backend needs the Modal client", hint="pip install 'mudpuppy[modal]'") from None
    if not (config.get("token_id") and config.get("token_secret")):
        raise UserError("no Modal token is configured", hint="run `modal token new` (or set MODAL_TOKEN_ID and "
                        "MODAL_TOKEN_SECRET)")


class ModalBackend(Backend):
    name = "modal"
    capabilities = Capabilities(
        multi_node=True, requeue=True,
        notes="outputs on a Modal Volume; multi-node via modal.clustered (preview)",
    )

    def plan(self, bundle: Bundle, run_id: str) -> Plan:
        spec = modal_spec(self.launch, run_id, bundle)
        shown = {k: v for k, v in spec.items() if k not in ("image",)}
        script = (f"# Generated by mudpuppy: Modal app {spec['app_name']!r}, function 'train' "
                  f"(volume {spec['volume']!r} at {spec['mount']})\n" + json.dumps(shown, indent=2, sort_keys=True))
        return Plan(
            backend=self.name, run_id=run_id, bundle_path=str(bundle.path), bundle_digest=bundle.digest,
            script=script + "\n", workdir=spec["job"]["env"]["MUDPUPPY_WORKDIR"], session=spec["app_name"],
            env=dict(spec["job"]["env"]), secrets=tuple(self.launch.secrets), retries=self.launch.retries,
            extra={"spec": spec},
        )

    def submit(self, plan: Plan) -> Handle:
        require_token()
        spec = plan.extra["spec"]
        import modal

        from mudpuppy.backends.modal_app import build_app

        parts = build_app(spec)
        try:
            # enable_output shows the image build (minutes on a first run) instead of a silent wait
            with modal.enable_output(), parts.app.run(detach=True, environment_name=spec.get("environment")):
                call = parts.function.spawn(spec["job"])
                app_id = parts.app.app_id
        except Exception as exc:
            raise UserError(f"Modal refused the run: {_first_line(exc)}", hint=_hint(exc)) from None
        return Handle(self.name, app_id or spec["app_name"], call.object_id)

    def _call(self, handle: Handle) -> Any:
        require_token()
        import modal

        return modal.FunctionCall.from_id(handle.id)

    def status(self, handle: Handle) -> RunStatus:
        return status_of(self._call(handle))

    def logs(self, handle: Handle, follow: bool = False) -> Iterator[str]:
        call = self._call(handle)
        entries = call.logs.stream() if follow else call.logs.tail(entries=10_000)
        for entry in entries:
            text = str(entry)
            yield text if text.endswith("\n") else text + "\n"

    def cancel(self, handle: Handle) -> None:
        self._call(handle).cancel(terminate_containers=True)

    def output_location(self, plan: Plan, output_dir: str) -> str:
        spec = plan.extra["spec"]
        return f"modal volume {spec['volume']}: /runs/{plan.run_id}/{output_dir.removeprefix('./')}"


def status_of(call: Any) -> RunStatus:
    """Map a FunctionCall's outcome: still running (get times out), a result dict, or a raised error."""
    try:
        result = call.get(timeout=0)
    except TimeoutError:
        return RunStatus(State.RUNNING, native="running")
    except Exception as exc:
        name = type(exc).__name__
        if "Cancel" in name:
            return RunStatus(State.CANCELLED, reason="cancelled", native=name)
        return RunStatus(State.FAILED, reason=_first_line(exc), native=name)
    code = result.get("exit_code") if isinstance(result, dict) else None
    if code == 0:
        return RunStatus(State.SUCCEEDED, exit_code=0, attempts=(result.get("attempt") or 0) + 1, native="finished")
    reason = "user error (exit 2): see `mudpuppy logs`" if code == EXIT_USER_ERROR else f"exit {code}"
    return RunStatus(State.FAILED, reason=reason, exit_code=code, native="finished")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _hint(exc: BaseException) -> str | None:
    text = str(exc).lower()
    if "secret" in text:
        return "create it with `modal secret create NAME KEY=VALUE`"
    if "token" in text or "unauthenticated" in text or "auth" in text:
        return "run `modal token new`"
    return None


__all__ = ["GPU_LIMITS", "ModalBackend", "modal_gpu", "modal_spec", "require_token", "status_of"]
