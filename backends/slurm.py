"""``slurm``: one sbatch script per run; ``srun`` starts one torchrun per node, rendezvous at the first node.

The script is rendered by a pure ``materialize`` (every value quoted: ``#SBATCH`` words the way sbatch reads them,
the body for bash; a header saying what generated it) and
pinned by golden tests. Submission runs ``sbatch`` in this machine's shell or, with ``launch.slurm.login``, on
a login node over SSH. Preemption: ``--signal=B:USR1@N`` reaches the batch shell, which relays USR1 to every
task (``scancel --signal=USR1``); the runtime saves and exits 75, and the script requeues the job
(``scontrol requeue``) until ``launch.retries`` restarts were used. Without slurmdbd, status reads
``scontrol show job`` and falls back to ``sacct`` when accounting exists.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mudpuppy import __version__
from mudpuppy.backends.base import Backend, Capabilities, Handle, Plan, RunStatus, State
from mudpuppy.backends.command import job_env, node_command, nproc_per_node
from mudpuppy.backends.container import container_words
from mudpuppy.backends.transport import LocalTransport, SSHTransport, Transport, rpath
from mudpuppy.launcher.bundle import Bundle
from mudpuppy.launcher.config.schema.launch import LaunchSection
from mudpuppy.launcher.contract import ENV_NODE_EXITS, ENV_OUTPUT_BASE, EXIT_REQUEUE
from mudpuppy.launcher.errors import UserError
from mudpuppy.launcher.image import image_key, venv_setup_script
from mudpuppy.launcher.scriptsafe import sbatch_word

STATES: dict[str, State] = {
    "PENDING": State.PENDING,
    "CONFIGURING": State.PENDING,
    "REQUEUED": State.PENDING,
    "REQUEUE_HOLD": State.PENDING,
    "REQUEUE_FED": State.PENDING,
    "RESV_DEL_HOLD": State.PENDING,
    "RUNNING": State.RUNNING,
    "COMPLETING": State.RUNNING,
    "SUSPENDED": State.RUNNING,
    "STOPPED": State.RUNNING,
    "SIGNALING": State.RUNNING,
    "STAGE_OUT": State.RUNNING,
    "RESIZING": State.RUNNING,
    "COMPLETED": State.SUCCEEDED,
    "CANCELLED": State.CANCELLED,
    "FAILED": State.FAILED,
    "TIMEOUT": State.FAILED,
    "NODE_FAIL": State.FAILED,
    "PREEMPTED": State.FAILED,
    "BOOT_FAIL": State.FAILED,
    "DEADLINE": State.FAILED,
    "OUT_OF_MEMORY": State.FAILED,
    "SPECIAL_EXIT": State.FAILED,
    "REVOKED": State.FAILED,
}


def map_state(native: str) -> State:
    return STATES.get(native.split()[0].rstrip("+").upper(), State.UNKNOWN) if native else State.UNKNOWN


def log_path(workdir: str, job_id: str) -> str:
    """Also used with the configured workdir ('~' included): ``rpath`` expands it on the side that reads the log."""
    return f"{workdir.rstrip('/')}/logs/slurm-{job_id}.out"


def _directives(launch: LaunchSection, run_id: str, workdir: str, run_dir: str) -> list[str]:
    opts = launch.slurm
    out = [
        f"--job-name={launch.name or 'mudpuppy'}-{run_id}",
        f"--nodes={launch.nodes}",
        "--ntasks-per-node=1",
    ]
    gpus = _gpus_per_node(launch)
    if gpus:
        out.append(f"--gpus-per-node={gpus}")
    cpus = _cpus_per_task(launch)
    if cpus:
        out.append(f"--cpus-per-task={cpus}")
    out += _memory_directives(launch)
    time_limit = opts.time or launch.time
    if time_limit:
        out.append(f"--time={time_limit}")
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(opts, key)
        if value:
            out.append(f"--{key}={value}")
    out += [
        f"--output={log_path(workdir, '%j')}",
        "--open-mode=append",
        f"--chdir={run_dir}",
        "--requeue",
    ]
    if opts.signal_seconds:
        out.append(f"--signal=B:USR1@{opts.signal_seconds}")
    out += list(opts.extra_directives)
    return out


def _gpus_per_node(launch: LaunchSection) -> str | None:
    """The GRES type exactly as the user wrote it (site names differ: h100, H100, nvidia_h100_80gb_hbm3), or the
    count alone with ``launch.slurm.gpu_type: false``."""
    kind, count = launch.gpu_kind_and_count()
    if not count:
        return None
    return f"{kind}:{count}" if kind and launch.slurm.gpu_type else str(count)


def _cpus_per_task(launch: LaunchSection) -> int | None:
    opts = launch.slurm
    nproc = nproc_per_node(launch, opts.nproc_per_node)
    return opts.cpus_per_task or launch.cpus or (nproc if nproc > 1 else None)


def _memory_directives(launch: LaunchSection) -> list[str]:
    opts = launch.slurm
    mem = opts.mem or launch.memory
    if opts.whole_node:
        if mem:
            raise UserError(
                f"launch.slurm.whole_node asks for all of each node's memory (--mem=0) but a memory of {mem!r} is set",
                hint="drop launch.slurm.mem / launch.memory, or set launch.slurm.whole_node: false",
            )
        return ["--exclusive", "--mem=0"]
    out = [f"--mem={mem}"] if mem else []
    if opts.exclusive:
        out.append("--exclusive")
    return out


def venv_dir(workdir: str, image: Mapping[str, Any]) -> str:
    return f"{workdir}/venvs/{image_key(dict(image))}"


def _environment_lines(launch: LaunchSection, workdir: str, bundle: str, image: Mapping[str, Any] | None) -> list[str]:
    """Shell run once per job on the first node, before ``srun``: the venv the compute nodes use, built from the
    image spec on the shared filesystem once per spec. ``flock`` on a lock file next to it makes a second job
    wait for the first build instead of building into the same folder (the SSH backend's setup script, reused)."""
    opts = launch.slurm
    if opts.python or launch.image or image is None:
        return []
    venv = venv_dir(workdir, image)
    setup = venv_setup_script(dict(image), shlex.quote(bundle), shlex.quote(venv))
    return [
        "# The compute nodes' environment: a venv from the bundle's image spec, built once per spec on the shared",
        "# filesystem; flock makes concurrent jobs wait for one build.",
        f"mkdir -p {shlex.quote(workdir + '/venvs')}",
        f"echo \"[mudpuppy] environment: venv {venv}\"",
        f"if ! flock {shlex.quote(venv + '.lock')} bash -euo pipefail -c {shlex.quote(setup)}; then",
        f"    echo \"[mudpuppy] building the venv {venv} failed\"",
        "    exit 1",
        "fi",
    ]


def _node_python(launch: LaunchSection, workdir: str, image: Mapping[str, Any] | None) -> str:
    opts = launch.slurm
    if launch.image:
        return opts.container_python
    if opts.python:
        return opts.python
    return f"{venv_dir(workdir, image)}/bin/python" if image is not None else "python3"


def _container_words(launch: LaunchSection, workdir: str, run_dir: str) -> tuple[list[str], list[str]]:
    """(srun options, command prefix) that run each node's command inside ``launch.image``: pyxis/enroot through
    srun's own ``--container-*`` options, or ``apptainer exec``. The shared workdir and the submit directory (where
    relative outputs go) are mounted at the same paths; both tools pass the job's environment through."""
    if not launch.image:
        return [], []
    opts = launch.slurm
    mounts = f'{shlex.quote(workdir)}:{shlex.quote(workdir)},"$SLURM_SUBMIT_DIR":"$SLURM_SUBMIT_DIR"'
    if opts.container == "pyxis":
        srun = [f"--container-image={shlex.quote(launch.image)}", f"--container-mounts={mounts}",
                f"--container-workdir={shlex.quote(run_dir)}"]
        return srun + [shlex.quote(a) for a in opts.container_args], []
    words = container_words("apptainer", launch.image, mount=workdir, workdir=run_dir, env_names=(),
                            gpus=bool(launch.gpus), name="", extra=opts.container_args)
    words[-1:-1] = ['--bind="$SLURM_SUBMIT_DIR"']
    return [], words


def _node_exit_lines() -> list[str]:
    """75 for the job when the nodes that recorded an exit all saved (75) and srun killed the rest afterwards: the
    save is collective, so one node's 75 means the checkpoint is complete. A recorded crash anywhere stands."""
    return [
        f'codes=$(cat "${ENV_NODE_EXITS}"/node* 2>/dev/null | sort -u | tr "\\n" " ")',
        f'if [ "$rc" -ne 0 ] && [ "$rc" -ne {EXIT_REQUEUE} ] && [ "$codes" = "{EXIT_REQUEUE} " ]; then',
        f'    echo "[mudpuppy] srun exit $rc, but every node that finished had saved and exited {EXIT_REQUEUE}"',
        f"    rc={EXIT_REQUEUE}",
        "fi",
        f'rm -rf "${ENV_NODE_EXITS}"',
    ]


def _resolve_home(workdir: str, home: str | None) -> str:
    if workdir == "~" or workdir.startswith("~/"):
        if home is None:
            raise UserError(
                f"launch.slurm.workdir {workdir!r} starts with '~', which #SBATCH lines cannot expand",
                hint="give an absolute path on the shared filesystem, e.g. /shared/$USER/mudpuppy",
            )
        return home.rstrip("/") + workdir[1:]
    if workdir.startswith("~"):
        raise UserError(f"launch.slurm.workdir {workdir!r}: '~user' paths are not supported",
                        hint="give an absolute path on the shared filesystem")
    return workdir


def materialize(
    launch: LaunchSection,
    run_id: str,
    bundle_name: str,
    bundle_digest: str,
    *,
    image: Mapping[str, Any] | None = None,
    home: str | None = None,
) -> str:
    """The sbatch script, as text: pure (no clock, no host lookups), every value quoted.

    ``image`` is the bundle's image spec (the venv the compute nodes use); ``home`` the submitting side's home
    folder, for a workdir that starts with '~'.
    """
    opts = launch.slurm
    workdir = _resolve_home(opts.workdir.rstrip("/") or "/", home)
    run_dir = f"{workdir}/runs/{run_id}"
    bundle = f"{workdir}/bundles/{bundle_name}"
    nproc = nproc_per_node(launch, opts.nproc_per_node)
    command = node_command(
        _node_python(launch, workdir, image), launch, bundle, nnodes=launch.nodes, nproc=nproc,
        node_rank="env:SLURM_NODEID", master_addr="HEAD", master_port=opts.master_port or 0,
    )
    placeholders = {"--master-addr=HEAD": '--master-addr="$head"', "--master-port=0": '--master-port="$port"'}
    srun_opts, prefix = _container_words(launch, workdir, run_dir)
    rendered_cmd = " ".join([*prefix, *(placeholders.get(a) or shlex.quote(a) for a in command)])
    env = job_env(launch, run_id, run_dir, bundle)
    cpus = _cpus_per_task(launch)
    lines = [
        "#!/bin/bash",
        f"# Generated by mudpuppy {__version__} for run {run_id} (bundle {bundle_digest[:16]}).",
        "# Do not edit: change the config and relaunch. Secrets come from the submitting environment.",
    ]
    lines += [f"#SBATCH {sbatch_word(d)}" for d in _directives(launch, run_id, workdir, run_dir)]
    lines += [
        "",
        "set -uo pipefail",
        *[f"export {k}={shlex.quote(v)}" for k, v in env.items()],
        'export MUDPUPPY_ATTEMPT=${SLURM_RESTART_COUNT:-0}',
        "# Relative output_dir / dataset_prepared_path resolve against the submit directory, as sbatch paths do.",
        f'export {ENV_OUTPUT_BASE}="$SLURM_SUBMIT_DIR"',
        *([f"export SRUN_CPUS_PER_TASK={cpus}  # srun does not inherit --cpus-per-task since Slurm 22.05"]
          if cpus else []),
        f"retries={launch.retries}",
        'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)',
        (f"port={opts.master_port}" if opts.master_port else
         "port=$(( 15000 + SLURM_JOB_ID % 10000 ))  # per job: two jobs sharing a head node do not collide"),
        'echo "[mudpuppy] attempt $(( MUDPUPPY_ATTEMPT + 1 )) on $SLURM_JOB_NODELIST (rendezvous $head:$port)"',
        'echo "[mudpuppy] outputs: relative paths resolve against $SLURM_SUBMIT_DIR"',
        "trap 'echo \"[mudpuppy] preemption notice before training started: nothing to save\"' USR1",
        *_environment_lines(launch, workdir, bundle, image),
        "",
        "# One task per node; each runs torchrun (or the runtime directly for a single process). A task that fails",
        "# ends the step (--kill-on-bad-exit=1) so the other nodes do not hang in a collective. Each node records",
        "# its exit code in $MUDPUPPY_NODE_EXITS: srun reports nodes it killed that way by their signal.",
        f'export {ENV_NODE_EXITS}="$PWD/.node-exits-$SLURM_JOB_ID-${{SLURM_RESTART_COUNT:-0}}"',
        f'rm -rf "${ENV_NODE_EXITS}"; mkdir -p "${ENV_NODE_EXITS}"',
        " ".join(["srun", f"--nodes={launch.nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1", *srun_opts,
                  rendered_cmd, "&"]),
        "step=$!",
        "# The preemption notice (USR1) reaches only this shell: relay it to every task so the runtime saves",
        "# (each task relays it on to its torchrun workers, which proctrack/pgid would not reach).",
        "trap 'echo \"[mudpuppy] preemption notice: asking the job to checkpoint\"; "
        "scancel --signal=USR1 \"$SLURM_JOB_ID\"' USR1",
        "trap 'kill -TERM \"$step\" 2>/dev/null' TERM",
        'while kill -0 "$step" 2>/dev/null; do wait "$step"; done',
        'wait "$step"; rc=$?',
        *_node_exit_lines(),
        "",
        f"if [ \"$rc\" -eq {EXIT_REQUEUE} ]; then",
        "    # Requeue only a job that is still RUNNING (a USR1 notice). While SLURM is ending it (COMPLETING:",
        "    # scancel, its own requeue or preemption, the time limit) SLURM's decision stands.",
        '    state=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null | grep -o "JobState=[A-Z_]*")',
        '    if [ "$state" != "JobState=RUNNING" ]; then',
        '        echo "[mudpuppy] checkpoint saved; SLURM is ending the job (${state#JobState=}): not requeueing"',
        '        exit "$rc"',
        "    fi",
        '    if [ "${SLURM_RESTART_COUNT:-0}" -lt "$retries" ]; then',
        '        echo "[mudpuppy] preempted with a checkpoint saved: requeueing'
        ' (restart $(( MUDPUPPY_ATTEMPT + 1 )) of $retries)"',
        "        trap '' TERM",
        '        scontrol requeue "$SLURM_JOB_ID"',
        "        exit 0",
        "    fi",
        '    echo "[mudpuppy] preempted, but launch.retries=$retries restarts are used up"',
        "fi",
        'echo "[mudpuppy] job exit code $rc"',
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


class SlurmBackend(Backend):
    name = "slurm"
    _image: dict[str, Any] | None = None
    capabilities = Capabilities(multi_node=True, notes="shared filesystem assumed for launch.slurm.workdir")

    def session(self) -> str:
        return self.launch.slurm.login or "local"

    def transport(self, session: str | None = None) -> Transport:
        session = session or self.session()
        if session == "local":
            return LocalTransport()
        return SSHTransport(session, self.launch.ssh)

    def plan(self, bundle: Bundle, run_id: str) -> Plan:
        # '~' in the workdir is this machine's home when sbatch runs here; over SSH it is the login node's, asked
        # for at submit time (the dry run shows $HOME in its place).
        if self.session() == "local" and self.launch.slurm.workdir.startswith("~"):
            # recorded resolved, so status/logs find the run whoever's $HOME they run under
            workdir = _resolve_home(self.launch.slurm.workdir, os.path.expanduser("~"))
            slurm = self.launch.slurm.model_copy(update={"workdir": workdir})
            self.launch = self.launch.model_copy(update={"slurm": slurm})
        self._image = dict(bundle.image)  # for the submit-time re-render (kept out of the dry run's header)
        return self._plan(run_id, bundle.name, bundle.digest, str(bundle.path), bundle.image, None)

    def _plan(self, run_id: str, bundle_name: str, digest: str, bundle_path: str, image: Mapping[str, Any] | None,
              home: str | None) -> Plan:
        workdir = self.launch.slurm.workdir.rstrip("/") or "/"
        pending = home is None and workdir.startswith("~")
        workdir = _resolve_home(workdir, "$HOME" if pending else home)
        script = materialize(self.launch, run_id, bundle_name, digest, image=image, home="$HOME" if pending else home)
        run_dir = f"{workdir}/runs/{run_id}"
        bundle = f"{workdir}/bundles/{bundle_name}"
        return Plan(
            backend=self.name, run_id=run_id, bundle_path=bundle_path, bundle_digest=digest,
            script=script, workdir=run_dir, session=self.session(),
            env=job_env(self.launch, run_id, run_dir, bundle),
            secrets=tuple(self.launch.secrets), retries=self.launch.retries,
            extra={"remote_bundle": bundle, "script_path": f"{run_dir}/job.sbatch", "workdir": workdir,
                   "home_pending": pending, "bundle_name": bundle_name,
                   # sbatch's submit directory: here, or the login shell's folder (its home) over SSH
                   "output_base": os.getcwd() if self.session() == "local" else "~"},
        )

    def submit(self, plan: Plan) -> Handle:
        t = self.transport(plan.session)
        try:
            plan = self.stage(t, plan)
            job_id = self.sbatch(t, plan.session, plan.extra["script_path"], plan.secrets)
        finally:
            t.close()
        return Handle(self.name, plan.session, job_id)

    def stage(self, t: Transport, plan: Plan) -> Plan:
        """Everything before ``sbatch``: the run folder, the bundle (once per name) and the script, written on the
        submitting side. Returns the plan re-rendered once a '~' workdir is resolved on the login node."""
        missing = [name for name in plan.secrets if name not in os.environ]
        if missing:
            raise UserError(f"secret {missing[0]} is not set in your environment", hint="export it, then relaunch")
        where = "this machine" if plan.session == "local" else plan.session
        if t.run("command -v sbatch", timeout=30).code != 0:
            raise UserError(
                f"sbatch not found on {where}", hint="run from a SLURM login node or set launch.slurm.login"
            )
        if plan.extra.get("home_pending"):
            res = t.run('printf %s "$HOME"', timeout=30)
            if res.code != 0 or not res.stdout.startswith("/"):
                raise UserError(f"cannot read $HOME on {where} to resolve launch.slurm.workdir",
                                hint="set launch.slurm.workdir to an absolute path")
            plan = self._plan(plan.run_id, plan.extra["bundle_name"], plan.bundle_digest, plan.bundle_path,
                              self._image, res.stdout)
        bundle = plan.extra["remote_bundle"]
        workdir = plan.extra["workdir"]
        res = t.run(f"mkdir -p {rpath(plan.workdir)} {rpath(workdir)}/logs {rpath(workdir)}/bundles", timeout=30)
        if res.code != 0:
            raise UserError(f"cannot create {plan.workdir} on {where}: {res.stderr.strip()}")
        if t.run(f"test -f {rpath(bundle)}", timeout=30).code != 0:
            t.put(Path(plan.bundle_path), bundle)
        script_path = plan.extra["script_path"]
        res = t.run(f"cat > {rpath(script_path)}", timeout=30, stdin=plan.script)
        if res.code != 0:
            raise UserError(f"cannot write {script_path} on {where}: {res.stderr.strip()}")
        return plan

    def sbatch(self, t: Transport, session: str, script_path: str, secrets: tuple[str, ...]) -> str:
        """Submit a staged script; returns SLURM's job id. Secrets reach sbatch's environment through stdin (never
        argv or a file); sbatch exports them. sbatch runs in the current folder (here) or the login shell's: that
        is $SLURM_SUBMIT_DIR."""
        where = "this machine" if session == "local" else session
        exports = [f"export {name}={shlex.quote(os.environ[name])}" for name in secrets if name in os.environ]
        res = t.run(
            f"set -a; . /dev/stdin; set +a; sbatch --parsable {rpath(script_path)}",
            timeout=60, stdin="\n".join(exports) + "\n",
        )
        if res.code != 0:
            message = " ".join((res.stderr or res.stdout).strip().splitlines()[-1:]) or f"exit {res.code}"
            raise UserError(f"sbatch on {where} refused the job: {message}", hint=_sbatch_hint(message))
        job_id = res.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise UserError(f"sbatch on {where} printed no job id: {res.stdout.strip()!r}")
        return job_id

    def status(self, handle: Handle) -> RunStatus:
        t = self.transport(handle.session)
        try:
            res = t.run(f"scontrol show job -o {shlex.quote(handle.id)}", timeout=30)
            if res.code == 0 and "JobState=" in res.stdout:
                return _from_scontrol(res.stdout, self.launch.retries)
            res = t.run(f"sacct -n -P -X -j {shlex.quote(handle.id)} -o State,ExitCode,Reason", timeout=30)
            line = res.stdout.strip().splitlines()[:1] if res.code == 0 else []
            if line:
                native, exit_code, reason = (line[0].split("|") + ["", "", ""])[:3]
                code = _exit(exit_code)
                return RunStatus(map_state(native), reason=_reason(native, code, self.launch.retries) or reason,
                                 exit_code=code, native=native)
        finally:
            t.close()
        return RunStatus(State.UNKNOWN, reason="SLURM no longer knows the job and has no accounting (sacct)")

    def logs(self, handle: Handle, follow: bool = False) -> Iterator[str]:
        path = rpath(log_path(self.launch.slurm.workdir, handle.id))
        job = shlex.quote(handle.id)
        if follow:
            cmd = (
                f"while [ ! -f {path} ] && squeue -h -j {job} 2>/dev/null | grep -q .; do sleep 1; done; "
                f"tail -n +1 -F {path} 2>/dev/null & t=$!; "
                f"while squeue -h -j {job} 2>/dev/null | grep -q .; do sleep 1; done; sleep 1; kill $t"
            )
        else:
            cmd = f"cat {path} 2>/dev/null"
        t = self.transport(handle.session)
        try:
            yield from t.stream(cmd)
        finally:
            t.close()

    def cancel(self, handle: Handle) -> None:
        t = self.transport(handle.session)
        try:
            res = t.run(f"scancel {shlex.quote(handle.id)}", timeout=30)
            if res.code != 0:
                raise UserError(f"scancel {handle.id} failed: {res.stderr.strip()}")
        finally:
            t.close()


def _sbatch_hint(message: str) -> str:
    lower = message.lower()
    if "partition" in lower:
        return "check launch.slurm.partition against `sinfo -s`"
    if "account" in lower or "qos" in lower:
        return "check launch.slurm.account / qos with `sacctmgr show assoc user=$USER`"
    if "node configuration" in lower or "gres" in lower:
        return "the resources asked for (gpus, nodes, mem) exceed what the partition has"
    return "see the message above"


def _exit(text: str) -> int | None:
    m = re.match(r"(\d+)(?::(\d+))?", text.strip())
    if not m:
        return None
    code, sig = int(m.group(1)), int(m.group(2) or 0)
    return code if code or not sig else -sig


def _reason(native: str, code: int | None, retries: int) -> str | None:
    state = map_state(native)
    if state != State.FAILED:
        return None
    if code == EXIT_REQUEUE:
        return f"preempted; launch.retries={retries} restarts used up"
    if native.startswith("TIMEOUT"):
        return "hit the time limit (launch.slurm.time)"
    if code == 2:
        return "user error (exit 2): see `mudpuppy logs`"
    return f"{native.lower()} (exit code {code})"


def _from_scontrol(text: str, retries: int) -> RunStatus:
    fields: dict[str, str] = {m.group(1): m.group(2) for m in re.finditer(r"(\w+)=(\S*)", text)}
    native = fields.get("JobState", "")
    code = _exit(fields.get("ExitCode", ""))
    restarts = int(fields["Restarts"]) if fields.get("Restarts", "").isdigit() else 0
    reason = _reason(native, code, retries)
    if reason is None and fields.get("Reason") not in (None, "None"):
        reason = fields["Reason"]
    return RunStatus(map_state(native), reason=reason, attempts=restarts + 1, exit_code=code, native=native)
