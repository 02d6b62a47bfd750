"""``skypilot``: a SkyPilot task per run; ``launch.spot`` (or ``launch.skypilot.managed``) makes it a managed job.

The task is rendered here as plain data (``render_task``: pure, golden-tested) and printed as YAML by
``--dry-run`` without SkyPilot installed. Submission and everything after it go through
``skypilot_driver.py``, a stdlib + ``sky`` script run by the interpreter of the environment SkyPilot lives in:
SkyPilot pins ``click<8.2`` while current huggingface-hub needs a newer click, so SkyPilot cannot share the
training environment and is driven from its own (``launch.skypilot.python``, ``$MUDPUPPY_SKYPILOT_PYTHON``, or
the interpreter behind ``sky`` on PATH).

Checkpoints: a managed job needs somewhere that outlives its VM, so spot/managed runs without
``launch.skypilot.bucket`` (or an ``s3://``/``gs://`` ``launch.volume``) are refused at plan time. The bucket is
not mounted: SkyPilot's ``MOUNT_CACHED`` uploads asynchronously and in no fixed order (a manifest could land
before the shards it lists), and ``MOUNT`` modes refuse a bucket sub-path. The runtime's own volume sync
(``MUDPUPPY_VOLUME``) writes each checkpoint's files first and its manifest last, and restores the newest
verified one on the recovered VM.

Retries: SkyPilot recovers exit codes in ``recover_on_exit_codes`` without counting them and re-runs every other
failure ``max_restarts_on_errors`` times, exit 2 included. So the task sets ``max_restarts_on_errors: 0`` and the
run script decides: the head node counts attempts in a file on the volume (preemptions that kill the VM count
too, since the count is taken at start); a user error (exit 2) is passed through and never retried; any other
failure becomes exit 75 (recover) while ``launch.retries`` restarts remain, and a plain failure once they are
spent. With ``launch.spot`` the resources are ``any_of`` spot and on-demand (spot listed first; SkyPilot's optimizer
picks the cheapest one available, so on-demand is used only when no spot capacity is found), unless
``spot_fallback`` is off.

Clusters do not outlive their run: unmanaged launches autodown after ``idle_minutes_to_autostop`` (default
``AUTODOWN_MINUTES``), and ``cancel`` tears the cluster down.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mudpuppy import __version__
from mudpuppy.backends.base import Backend, Capabilities, Handle, Plan, RunStatus, State
from mudpuppy.backends.command import job_env, node_command, nproc_per_node
from mudpuppy.launcher.bundle import Bundle
from mudpuppy.launcher.config.schema.launch import LaunchSection
from mudpuppy.launcher.contract import ENV_ATTEMPT, ENV_VOLUME, EXIT_REQUEUE, EXIT_USER_ERROR
from mudpuppy.launcher.errors import UserError
from mudpuppy.launcher.image import venv_setup_script

DRIVER = Path(__file__).with_name("skypilot_driver.py")
REMOTE_ROOT = "~/mudpuppy"
BUNDLE_MOUNT = "/mudpuppy/bundles"
AUTODOWN_MINUTES = 10  # an unmanaged cluster is torn down this long after its job ends, unless set otherwise
VOLUME_SCHEMES = ("s3", "gs")
LAUNCH_WAIT_S = 1800  # how long submit waits for provisioning; after that the run is tracked by its request id
REQUEST_PREFIX = "req-"  # what the runtime's volume sync can write to
# SkyPilot's cloud names (sky check); validated here so a typo fails before anything is created.
CLOUDS = ("aws", "azure", "cudo", "do", "fluidstack", "gcp", "hyperbolic", "ibm", "kubernetes", "lambda", "mithril",
          "nebius", "oci", "paperspace", "primeintellect", "runpod", "scp", "seeweb", "shadeform", "slurm", "ssh",
          "vast", "verda", "vsphere", "yotta")  # SkyPilot 0.14's registry; a test keeps this list honest

# SkyPilot managed-job and cluster-job states -> ours.
STATES = {
    "PENDING": State.PENDING, "SUBMITTED": State.PENDING, "STARTING": State.PENDING, "INIT": State.PENDING,
    "SETTING_UP": State.PENDING, "RECOVERING": State.PENDING,
    "RUNNING": State.RUNNING, "CANCELLING": State.RUNNING,
    "WINDING_DOWN": State.RUNNING,  # the job ended; SkyPilot is finishing its bookkeeping (final state follows)
    "SUCCEEDED": State.SUCCEEDED,
    "CANCELLED": State.CANCELLED,
    "FAILED": State.FAILED, "FAILED_SETUP": State.FAILED, "FAILED_PRECHECKS": State.FAILED,
    "FAILED_NO_RESOURCE": State.FAILED, "FAILED_CONTROLLER": State.FAILED, "FAILED_DRIVER": State.FAILED,
}


def map_state(native: str) -> State:
    return STATES.get(native.rsplit(".", 1)[-1].upper(), State.UNKNOWN)


def is_managed(launch: LaunchSection) -> bool:
    return launch.skypilot.managed if launch.skypilot.managed is not None else launch.spot


def bucket(launch: LaunchSection) -> str | None:
    """The checkpoint bucket: ``launch.skypilot.bucket``, else an object-store ``launch.volume``."""
    if launch.skypilot.bucket:
        return launch.skypilot.bucket.rstrip("/")
    if launch.volume and launch.volume.split("://", 1)[0] in ("s3", "gs", "r2", "cos", "oci", "https"):
        return launch.volume.rstrip("/")
    return None


def volume_url(launch: LaunchSection, run_id: str) -> str | None:
    """Where the runtime syncs this run's checkpoints: ``launch.volume`` as written (like every backend), or the
    run's own folder in ``launch.skypilot.bucket``. Only stores the runtime's volume sync can write are accepted."""
    store = bucket(launch)
    if store is None:
        return None
    key = "launch.skypilot.bucket" if launch.skypilot.bucket else "launch.volume"
    scheme = store.split("://", 1)[0].lower()
    if scheme not in VOLUME_SCHEMES or not store.split("://", 1)[1].strip("/"):
        raise UserError(f"{key} {store!r}: checkpoints on SkyPilot go to an s3:// or gs:// bucket",
                        hint="use s3://bucket/prefix or gs://bucket/prefix")
    if launch.skypilot.bucket:
        return f"{store}/runs/{run_id}"
    return launch.volume


def _memory(text: str) -> str:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:G|GB|Gi|GiB)?\s*(\+?)\s*", text, re.I)
    if not m:
        raise UserError(f"launch.memory {text!r}: SkyPilot wants gigabytes, like 64G")
    return f"{m.group(1)}+"


def _resources(launch: LaunchSection) -> dict[str, Any]:
    opts = launch.skypilot
    if opts.cloud and opts.cloud.lower() not in CLOUDS:
        raise UserError(f"launch.skypilot.cloud {opts.cloud!r} is not a SkyPilot cloud",
                        hint="one of " + ", ".join(CLOUDS))
    kind, count = launch.gpu_kind_and_count()
    if count and not kind:
        raise UserError(f"launch.gpus {launch.gpus!r}: SkyPilot needs the GPU type", hint="e.g. H100:8 or A100-80GB:4")
    res: dict[str, Any] = {}
    if count:
        res["accelerators"] = f"{kind}:{count}"
    if opts.cloud:
        res["cloud"] = opts.cloud.lower()
    for key in ("region", "zone", "image_id", "disk_size"):
        value = getattr(opts, key)
        if value is not None:
            res[key] = value
    if launch.image and "image_id" not in res:
        res["image_id"] = f"docker:{launch.image}"  # the nodes run inside the user's container
    if launch.cpus:
        res["cpus"] = f"{launch.cpus}+"
    if launch.memory:
        res["memory"] = _memory(launch.memory)
    if launch.spot:
        if opts.spot_fallback:
            res["any_of"] = [{"use_spot": True}, {"use_spot": False}]
        else:
            res["use_spot"] = True
    if is_managed(launch):
        # every retry decision is the run script's (it counts against launch.retries); SkyPilot only recovers 75
        res["job_recovery"] = {
            "strategy": opts.recovery_strategy,
            "max_restarts_on_errors": 0,
            "recover_on_exit_codes": [EXIT_REQUEUE],
        }
    return res


def render_task(launch: LaunchSection, run_id: str, bundle: Bundle | None, *, bundle_name: str, bundle_path: str,
                image: dict[str, Any], bundle_digest: str) -> dict[str, Any]:
    """The SkyPilot task as YAML-ready data: pure (no clock, no network, no SkyPilot import)."""
    managed = is_managed(launch)
    volume = volume_url(launch, run_id)
    if bundle is not None and launch.nodes > 1 and volume is not None:
        reason = node_local_shards(bundle.config_text)
        if reason:
            raise UserError(
                f"launch.nodes: {launch.nodes} on skypilot with {reason}: each node writes its own checkpoint "
                "shards to its own disk and only the head node syncs to the bucket, so a recovered job could "
                "not resume from them",
                hint="set fsdp_config.state_dict_type: FULL_STATE_DICT (rank 0 writes whole checkpoints), or run "
                "this multi-node job on slurm, ray or modal",
            )
    if managed and volume is None:
        raise UserError(
            ("launch.spot" if launch.spot else "launch.skypilot.managed")
            + ": a recovered managed job would restart from step 0 with nowhere to keep checkpoints",
            hint="set launch.skypilot.bucket: s3://BUCKET/prefix (or gs://...), or launch.volume",
        )
    remote_bundle = f"{BUNDLE_MOUNT}/{bundle_name}"
    workdir = f"{REMOTE_ROOT}/runs/{run_id}"
    venv = f"{REMOTE_ROOT}/venvs/{bundle_digest[:16]}"
    opts = launch.skypilot
    nproc = nproc_per_node(launch, opts.nproc_per_node)
    python = f"{venv}/bin/python"
    command = node_command(
        python, launch, remote_bundle, nnodes=launch.nodes, nproc=nproc,
        node_rank="env:SKYPILOT_NODE_RANK", master_addr="HEAD", master_port=opts.master_port,
    )
    rendered = " ".join('--master-addr="$head"' if a == "--master-addr=HEAD" else _q(a) for a in command)
    env = job_env(launch, run_id, workdir, remote_bundle)
    if volume:
        env[ENV_VOLUME] = volume
    task: dict[str, Any] = {
        "name": f"{launch.name or 'mudpuppy'}-{run_id}",
        "num_nodes": launch.nodes,
        "resources": _resources(launch),
        "envs": env,
    }
    if launch.secrets:
        # names only: the driver passes the values as SkyPilot's secrets_overrides at submit time
        task["secrets"] = {name: None for name in sorted(set(launch.secrets))}
    task["file_mounts"] = {remote_bundle: bundle_path}
    if launch.image:  # the container has the packages: only mudpuppy's wheel goes on top (seconds per recovery)
        setup = _image_setup(image, _q(remote_bundle), _q(venv))
        header = "the user's container plus mudpuppy's wheel"
    else:
        setup = venv_setup_script(image, _q(remote_bundle), _q(venv))
        header = "the runtime environment from the bundle's image spec"
    task["setup"] = f"# Generated by mudpuppy {__version__}: {header}\nset -euo pipefail\n" + setup
    lines = [
        f"# mudpuppy run {run_id}: one node_entry (torchrun) per node; rendezvous at the first node",
        "set -uo pipefail",
        'head=$(echo "$SKYPILOT_NODE_IPS" | head -n1)',
        f"mkdir -p {_q(workdir)} && cd {_q(workdir)}",
    ]
    budget = opts.max_restarts_on_errors if opts.max_restarts_on_errors is not None else launch.retries
    if managed:
        lines += _budget_start(python, run_id, budget)
    lines += [
        'echo "[mudpuppy] node $SKYPILOT_NODE_RANK of $SKYPILOT_NUM_NODES (rendezvous $head)"',
        rendered,
    ]
    if managed:
        lines += _budget_end(budget)
    task["run"] = "\n".join(lines) + "\n"
    return task


def node_local_shards(config_text: str) -> str | None:
    """Why this config's checkpoints are sharded across ranks (DeepSpeed ZeRO; FSDP unless it saves full state
    dicts), or None. The runtime's volume sync uploads from rank 0 only, so on separate per-node disks the other
    nodes' shards never reach the bucket."""
    import yaml

    try:
        cfg = yaml.safe_load(config_text) or {}
    except yaml.YAMLError:
        return None
    if not isinstance(cfg, dict):
        return None
    if cfg.get("deepspeed"):
        return "deepspeed (every rank saves its own ZeRO partition)"
    fsdp = cfg.get("fsdp_config")
    if cfg.get("fsdp") or cfg.get("fsdp_version") or isinstance(fsdp, dict):
        fsdp = fsdp if isinstance(fsdp, dict) else {}
        kind = fsdp.get("state_dict_type", fsdp.get("fsdp_state_dict_type"))
        if str(kind or "").upper() != "FULL_STATE_DICT":
            return f"FSDP state_dict_type {kind or 'unset (sharded)'}"
    return None


def _image_setup(image: dict[str, Any], bundle: str, venv: str) -> str:
    """A venv over the container's own packages (``--system-site-packages``) holding just mudpuppy's wheel."""
    wheel = shlex.quote(image["wheel"]) if image.get("wheel") else None
    lines = [f"[ -f {venv}/.ready ] || {{ python3 -m venv --system-site-packages {venv} && touch {venv}/.ready; }}"]
    if wheel:
        lines += [
            'wheel_tmp=$(mktemp -d)',
            f'tar -xzf {bundle} -C "$wheel_tmp" {wheel}',
            f'{venv}/bin/python -m pip install --quiet --no-deps --force-reinstall "$wheel_tmp"/{wheel}',
            'rm -rf "$wheel_tmp"',
        ]
    return "\n".join(lines) + "\n"


# The head node counts attempts in a file on the volume; the count is taken at start, so a VM lost to preemption
# (which SkyPilot recovers without asking anyone) uses up an attempt too.
_COUNT = (f'import fsspec, os, sys; u = os.environ["{ENV_VOLUME}"].rstrip("/") + "/.mudpuppy-attempts-" '
          "+ sys.argv[1]; fs, p = fsspec.core.url_to_fs(u); fs.makedirs(p.rsplit(\"/\", 1)[0], exist_ok=True); "
          "n = int(fs.cat_file(p)) if fs.exists(p) else 0; fs.pipe_file(p, str(n + 1).encode()); print(n + 1)")


def _budget_start(python: str, run_id: str, retries: int) -> list[str]:
    return [
        "attempt=0",
        'if [ "$SKYPILOT_NODE_RANK" = 0 ]; then',
        f"  attempt=$({_q(python)} -c {shlex.quote(_COUNT)} {_q(run_id)}) || "
        '{ echo "[mudpuppy] cannot count attempts on $MUDPUPPY_VOLUME" >&2; exit 1; }',
        f"  if [ \"$attempt\" -gt {retries + 1} ]; then",
        f'    echo "[mudpuppy] launch.retries ({retries}) spent: not starting attempt $attempt" >&2; exit 1',
        "  fi",
        "fi",
        f"export {ENV_ATTEMPT}=$(( attempt > 0 ? attempt - 1 : 0 ))",
    ]


def _budget_end(retries: int) -> list[str]:
    return [
        "code=$?",
        f'if [ "$code" = 0 ] || [ "$code" = {EXIT_USER_ERROR} ]; then exit "$code"; fi  # done, or a user error',
        'if [ "$SKYPILOT_NODE_RANK" != 0 ]; then exit 1; fi  # the head node decides whether to recover',
        f'if [ "$attempt" -le {retries} ]; then',
        f'  echo "[mudpuppy] exit $code on attempt $attempt of {retries + 1}: recovering" >&2; exit {EXIT_REQUEUE}',
        "fi",
        f'echo "[mudpuppy] exit $code and launch.retries ({retries}) spent" >&2',
        f'if [ "$code" = {EXIT_REQUEUE} ]; then exit 1; fi',
        'exit "$code"',
    ]


def _q(value: str) -> str:
    # '~/' must stay unquoted to expand on the node
    if value.startswith("~/"):
        return "~/" + shlex.quote(value[2:]) if value[2:] else "~/"
    return shlex.quote(value)


def to_yaml(task: dict[str, Any]) -> str:
    import yaml

    class _Literal(str):
        pass

    def literal(dumper: yaml.SafeDumper, data: _Literal) -> yaml.Node:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(_Literal, literal)
    data = dict(task)
    for key in ("setup", "run"):
        if key in data:
            data[key] = _Literal(data[key])
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=1000)


def sky_python(launch: LaunchSection) -> str:
    """The interpreter of the environment SkyPilot is installed in."""
    explicit = launch.skypilot.python or os.environ.get("MUDPUPPY_SKYPILOT_PYTHON")
    if explicit:
        if not Path(explicit).expanduser().exists():
            raise UserError(f"SkyPilot interpreter {explicit} does not exist",
                            hint="set launch.skypilot.python or MUDPUPPY_SKYPILOT_PYTHON to that venv's python")
        return str(Path(explicit).expanduser())
    sky = shutil.which("sky")
    if sky:
        with open(sky, "rb") as fh:
            first = fh.readline().decode(errors="replace").strip()
        if first.startswith("#!") and "python" in first:
            return first[2:].strip().split()[0]
    try:
        import importlib.util

        if importlib.util.find_spec("sky") is not None:
            return sys.executable
    except ValueError:
        pass
    raise UserError(
        "SkyPilot is not installed",
        hint="install it in its own environment (python -m venv ~/.sky && ~/.sky/bin/pip install 'skypilot[aws]'), "
        "then set MUDPUPPY_SKYPILOT_PYTHON=~/.sky/bin/python",
    )


def call_driver(python: str, command: str, payload: dict[str, Any], *, timeout: float = 1800,
                env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one driver command; its last stdout line is JSON. An ``error`` key becomes a one-line UserError."""
    proc = subprocess.run(
        [python, str(DRIVER), command], input=json.dumps(payload), capture_output=True, text=True,
        timeout=timeout, env=env, check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise UserError(f"SkyPilot {command} failed: {tail[0][:300]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if result.get("error"):
        raise UserError(f"SkyPilot: {result['error']}", hint=result.get("hint"))
    return result


class SkyPilotBackend(Backend):
    name = "skypilot"
    capabilities = Capabilities(
        multi_node=True, requeue=True,
        notes="managed jobs recover from preemption (exit 75); SkyPilot runs in its own environment",
    )

    def plan(self, bundle: Bundle, run_id: str) -> Plan:
        launch = self.launch
        task = render_task(launch, run_id, bundle, bundle_name=bundle.name, bundle_path=str(bundle.path),
                           image=bundle.image, bundle_digest=bundle.digest)
        managed = is_managed(launch)
        cluster = launch.skypilot.cluster or f"mudpuppy-{run_id}"
        idle = launch.skypilot.idle_minutes_to_autostop
        idle = AUTODOWN_MINUTES if idle is None else idle
        header = (f"# Generated by mudpuppy {__version__}: "
                  + ("sky jobs launch (managed)" if managed else f"sky launch -c {cluster}") + f" for run {run_id}\n")
        return Plan(
            backend=self.name, run_id=run_id, bundle_path=str(bundle.path), bundle_digest=bundle.digest,
            script=header + to_yaml(task), workdir=task["envs"]["MUDPUPPY_WORKDIR"],
            session="managed" if managed else cluster, env=dict(task["envs"]), secrets=tuple(launch.secrets),
            retries=launch.retries,
            extra={"task": task, "managed": managed, "cluster": cluster,
                   "idle_minutes_to_autostop": None if managed else idle},
        )

    def submit(self, plan: Plan) -> Handle:
        missing = [name for name in plan.secrets if name not in os.environ]
        if missing:
            raise UserError(f"secret {missing[0]} is not set in your environment", hint="export it, then relaunch")
        python = sky_python(self.launch)
        payload = {
            "task": plan.extra["task"], "managed": plan.extra["managed"], "cluster": plan.extra["cluster"],
            "idle_minutes_to_autostop": plan.extra["idle_minutes_to_autostop"],
            "down_on_failure": not self.launch.skypilot.cluster,  # made for this run: no use once it failed
            "secrets": list(plan.secrets),  # names: the driver reads the values from its environment
        }
        try:
            result = call_driver(python, "launch", payload, timeout=LAUNCH_WAIT_S)
        except subprocess.TimeoutExpired as exc:
            # SkyPilot's API server carries on provisioning; the request id finds the job later
            request = _request_id(exc.stdout)
            if request is None:
                raise UserError(f"SkyPilot did not answer within {LAUNCH_WAIT_S // 60} minutes",
                                hint="see `sky api status` and `sky status`; cancel what it started") from None
            return Handle(self.name, plan.session, f"{REQUEST_PREFIX}{request}")
        return Handle(self.name, plan.session, str(result["job_id"]))

    def status(self, handle: Handle) -> RunStatus:
        result = call_driver(sky_python(self.launch), "status", _ref(handle), timeout=300)
        native = str(result.get("status") or "")
        return RunStatus(map_state(native) if native else State.UNKNOWN, reason=result.get("reason"), native=native,
                         attempts=result.get("recovery_count"))

    def logs(self, handle: Handle, follow: bool = False) -> Iterator[str]:
        proc = subprocess.Popen(
            [sky_python(self.launch), str(DRIVER), "logs"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps({**_ref(handle), "follow": follow}))
        proc.stdin.close()
        try:
            yield from proc.stdout
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=30)

    def cancel(self, handle: Handle) -> None:
        """Cancel the job; an unmanaged cluster is torn down too unless ``cancel --keep``."""
        call_driver(sky_python(self.launch), "cancel", {**_ref(handle), "down": not self.keep_resources},
                    timeout=900)

    def output_location(self, plan: Plan, output_dir: str) -> str:
        volume = volume_url(self.launch, plan.run_id)
        if volume:  # the runtime's volume sync mirrors output_dir into the volume's root
            return volume
        return f"{plan.session}:{plan.workdir}/{output_dir.removeprefix('./')}"


def _ref(handle: Handle) -> dict[str, Any]:
    managed = handle.session == "managed"
    ref: dict[str, Any] = {"managed": managed, "cluster": None if managed else handle.session}
    if handle.id.startswith(REQUEST_PREFIX):
        return {**ref, "request_id": handle.id.removeprefix(REQUEST_PREFIX), "job_id": None}
    return {**ref, "job_id": int(handle.id)}


def _request_id(stdout: str | bytes | None) -> str | None:
    text = stdout.decode(errors="replace") if isinstance(stdout, bytes) else (stdout or "")
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                request = json.loads(line).get("request_id")
            except ValueError:
                continue
            if request:
                return str(request)
    return None
