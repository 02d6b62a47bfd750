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
from collections.abc import Iterator

from mudpuppy import __version__
from mudpuppy.backends.base import Backend, Capabilities, Handle, Plan, RunStatus, State
from mudpuppy.backends.command import job_env, node_command, nproc_per_node
from mudpuppy.backends.transport import LocalTransport, SSHTransport, Transport, rpath
from mudpuppy.launcher.bundle import Bundle
from mudpuppy.launcher.config.schema.launch import LaunchSection
from mudpuppy.launcher.contract import EXIT_REQUEUE
from mudpuppy.launcher.errors import UserError
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
    return f"{workdir.rstrip('/')}/logs/slurm-{job_id}.out"


def _directives(launch: LaunchSection, run_id: str, workdir: str, run_dir: str) -> list[str]:
    opts = launch.slurm
    kind, count = launch.gpu_kind_and_count()
    nproc = nproc_per_node(launch, opts.nproc_per_node)
    out = [
        f"--job-name={launch.name or 'mudpuppy'}-{run_id}",
        f"--nodes={launch.nodes}",
        "--ntasks-per-node=1",
    ]
    if count:
        out.append(f"--gpus-per-node={kind.lower() + ':' if kind else ''}{count}")
    cpus = opts.cpus_per_task or launch.cpus
    if cpus:
        out.append(f"--cpus-per-task={cpus}")
    elif nproc > 1:
        out.append(f"--cpus-per-task={nproc}")
    mem = opts.mem or launch.memory
    if mem:
        out.append(f"--mem={mem}")
    time_limit = opts.time or launch.time
    if time_limit:
        out.append(f"--time={time_limit}")
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(opts, key)
        if value:
            out.append(f"--{key}={value}")
    if opts.exclusive:
        out.append("--exclusive")
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


def materialize(launch: LaunchSection, run_id: str, bundle_name: str, bundle_digest: str) -> str:
    """The sbatch script, as text: pure (no clock, no host lookups), every value quoted."""
    opts = launch.slurm
    workdir = opts.workdir.rstrip("/")
    run_dir = f"{workdir}/runs/{run_id}"
    bundle = f"{workdir}/bundles/{bundle_name}"
    python = opts.python or "python3"
    nproc = nproc_per_node(launch, opts.nproc_per_node)
    home_dirs = [d for d in (run_dir, workdir) if d.startswith("~")]
    if home_dirs:  # #SBATCH lines are not shell: '~' would not expand
        raise UserError(
            f"launch.slurm.workdir {opts.workdir!r} starts with '~'",
            hint="give an absolute path on the shared filesystem, e.g. /shared/$USER/mudpuppy",
        )
    command = node_command(
        python, launch, bundle, nnodes=launch.nodes, nproc=nproc, node_rank="env:SLURM_NODEID",
        master_addr="HEAD", master_port=opts.master_port,
    )
    rendered_cmd = " ".join('--master-addr="$head"' if a == "--master-addr=HEAD" else shlex.quote(a) for a in command)
    env = job_env(launch, run_id, run_dir, bundle)
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
        f"retries={launch.retries}",
        'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)',
        'echo "[mudpuppy] attempt $(( MUDPUPPY_ATTEMPT + 1 )) on $SLURM_JOB_NODELIST (rendezvous $head)"',
        "",
        "# One task per node; each runs torchrun (or the runtime directly for a single process).",
        f"srun --nodes={launch.nodes} --ntasks-per-node=1 --kill-on-bad-exit=0 {rendered_cmd} &",
        "step=$!",
        "# The preemption notice (USR1) reaches only this shell: relay it to every task so the runtime saves.",
        "trap 'echo \"[mudpuppy] preemption notice: asking the job to checkpoint\"; "
        "scancel --signal=USR1 \"$SLURM_JOB_ID\"' USR1",
        "trap 'kill -TERM \"$step\" 2>/dev/null' TERM",
        'while kill -0 "$step" 2>/dev/null; do wait "$step"; done',
        'wait "$step"; rc=$?',
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
    capabilities = Capabilities(multi_node=True, notes="shared filesystem assumed for launch.slurm.workdir")

    def session(self) -> str:
        return self.launch.slurm.login or "local"

    def transport(self, session: str | None = None) -> Transport:
        session = session or self.session()
        if session == "local":
            return LocalTransport()
        return SSHTransport(session, self.launch.ssh)

    def plan(self, bundle: Bundle, run_id: str) -> Plan:
        workdir = self.launch.slurm.workdir.rstrip("/")
        script = materialize(self.launch, run_id, bundle.name, bundle.digest)
        run_dir = f"{workdir}/runs/{run_id}"
        return Plan(
            backend=self.name, run_id=run_id, bundle_path=str(bundle.path), bundle_digest=bundle.digest,
            script=script, workdir=run_dir, session=self.session(),
            env=job_env(self.launch, run_id, run_dir, f"{workdir}/bundles/{bundle.name}"),
            secrets=tuple(self.launch.secrets), retries=self.launch.retries,
            extra={"remote_bundle": f"{workdir}/bundles/{bundle.name}", "script_path": f"{run_dir}/job.sbatch"},
        )

    def submit(self, plan: Plan) -> Handle:
        exports = []
        for name in plan.secrets:
            if name not in os.environ:
                raise UserError(f"secret {name} is not set in your environment", hint="export it, then relaunch")
            exports.append(f"export {name}={shlex.quote(os.environ[name])}")
        t = self.transport(plan.session)
        where = "this machine" if plan.session == "local" else plan.session
        try:
            if t.run("command -v sbatch", timeout=30).code != 0:
                raise UserError(
                    f"sbatch not found on {where}", hint="run from a SLURM login node or set launch.slurm.login"
                )
            bundle = plan.extra["remote_bundle"]
            workdir = bundle.rsplit("/bundles/", 1)[0]
            res = t.run(f"mkdir -p {rpath(plan.workdir)} {rpath(workdir)}/logs {rpath(workdir)}/bundles", timeout=30)
            if res.code != 0:
                raise UserError(f"cannot create {plan.workdir} on {where}: {res.stderr.strip()}")
            if t.run(f"test -f {rpath(bundle)}", timeout=30).code != 0:
                from pathlib import Path

                t.put(Path(plan.bundle_path), bundle)
            script_path = plan.extra["script_path"]
            res = t.run(f"cat > {rpath(script_path)}", timeout=30, stdin=plan.script)
            if res.code != 0:
                raise UserError(f"cannot write {script_path} on {where}: {res.stderr.strip()}")
            # Secrets reach sbatch's environment through stdin (never argv or a file); sbatch exports them.
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
        finally:
            t.close()
        return Handle(self.name, plan.session, job_id)

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
