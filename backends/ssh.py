"""``ssh``: one detached supervisor per host, started over SSH; torchrun rendezvous at the first host.

Each host gets the bundle once (skipped when a file of that content-addressed name is there), a venv built
from ``image.json`` unless ``launch.ssh.python`` names an interpreter that already has mudpuppy, and
``WORKDIR/runs/RUN_ID/nodeI`` as its run folder (outputs too, unless ``launch.ssh.shared_fs``: then a relative
``output_dir`` resolves against the folder ``launch`` ran in, which the hosts see at the same path).
With ``launch.image`` the node command runs inside that image instead (``launch.ssh.container``: docker or
apptainer, see ``backends.container``) while the supervisor stays on the host. Secrets travel as JSON on the SSH
channel's stdin into the supervisor's memory and the job's environment; never on a command line or disk.
status/logs/cancel are plain shell (cat, tail, kill) so they work whatever Python the host has.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator

from mudpuppy.backends.base import Backend, Capabilities, Handle, Plan, RunStatus, State
from mudpuppy.backends.command import job_env, node_command, nproc_per_node
from mudpuppy.backends.container import container_words
from mudpuppy.backends.local import map_state
from mudpuppy.backends.transport import SSHTransport, Transport, rpath
from mudpuppy.launcher.bundle import Bundle
from mudpuppy.launcher.contract import ENV_ATTEMPT, ENV_OUTPUT_BASE
from mudpuppy.launcher.errors import UserError
from mudpuppy.launcher.image import image_key, venv_setup_script

CANCEL_GRACE_S = 30


def container_name(run_id: str, index: int) -> str:
    return f"mudpuppy-{run_id}-node{index}"


def _hostname(host: str) -> str:
    return host.rpartition("@")[2].partition(":")[0]


def login_shell(script: str) -> str:
    """Run ``script`` in a login shell: ``module``, conda and PATH setups in /etc/profile(.d) and ~/.bash_profile
    are what a job on a cluster host expects, and a plain ``bash -c`` over SSH reads none of them."""
    return f"exec bash -l -c {shlex.quote(script)}"


def _ssh_server_ip(t: Transport) -> str:
    """The address this host was reached on (from ``$SSH_CONNECTION``), else its first ``hostname -I`` address."""
    res = t.run('printf "%s\\n" "${SSH_CONNECTION:-}"; hostname -I 2>/dev/null || true', timeout=30)
    lines = res.stdout.splitlines()
    fields = lines[0].split() if lines else []
    if len(fields) == 4:
        return fields[2]
    rest = " ".join(lines[1:]).split()
    return rest[0] if rest else ""


def master_address(first: Transport, peers: list[Transport]) -> str | None:
    """The address of the first host that the other hosts can reach, asked of the hosts themselves.

    Host names in ``launch.ssh.hosts`` are often ``~/.ssh/config`` aliases (or names behind a jump host) that only
    this machine resolves. Each peer says which of its addresses we reached; the first host then says which of its
    own addresses it uses to reach that peer (``ip route get``), i.e. the interface on the nodes' network. Without
    ``ip`` the first host's own SSH address is used. None when nothing could be learnt.
    """
    for peer in peers:
        peer_ip = _ssh_server_ip(peer)
        if not peer_ip:
            continue
        res = first.run(f"ip -o route get {shlex.quote(peer_ip)} 2>/dev/null", timeout=30)
        words = res.stdout.split()
        if res.code == 0 and "src" in words[:-1]:
            return words[words.index("src") + 1]
    return _ssh_server_ip(first) or None


class SSHBackend(Backend):
    name = "ssh"
    capabilities = Capabilities(multi_node=True, notes="one process group per host; no scheduler queue")

    def hosts(self) -> list[str]:
        hosts = list(self.launch.ssh.hosts)
        if not hosts:
            raise UserError("launch.ssh.hosts is empty", hint="list user@host entries or ~/.ssh/config aliases")
        if len(hosts) < self.launch.nodes:
            raise UserError(f"launch.nodes={self.launch.nodes} but launch.ssh.hosts lists only {len(hosts)}")
        return hosts[: self.launch.nodes]

    def node_dir(self, run_id: str, index: int) -> str:
        return f"{self.launch.ssh.workdir.rstrip('/')}/runs/{run_id}/node{index}"

    def plan(self, bundle: Bundle, run_id: str) -> Plan:
        launch, opts = self.launch, self.launch.ssh
        hosts = self.hosts()
        root = opts.workdir.rstrip("/")
        remote_bundle = f"{root}/bundles/{bundle.name}"
        venv = f"{root}/venvs/{image_key(bundle.image)}"
        python = opts.python or f"{venv}/bin/python"
        nproc = nproc_per_node(launch, opts.nproc_per_node)
        scripts: dict[str, str] = {}
        output_base = os.getcwd() if opts.shared_fs else None  # the hosts see this folder at the same path
        for index, host in enumerate(hosts):
            workdir = self.node_dir(run_id, index)
            env = job_env(launch, run_id, workdir, remote_bundle)
            if output_base:
                env[ENV_OUTPUT_BASE] = output_base
            inner_python = opts.container_python if launch.image else python
            command = node_command(
                inner_python, launch, remote_bundle, nnodes=len(hosts), nproc=nproc, node_rank=str(index),
                master_addr=_hostname(hosts[0]), master_port=opts.master_port,
            )
            words = [rpath(a) if a.startswith("~/") else shlex.quote(a) for a in command]
            lines = ["set -euo pipefail", f"mkdir -p {rpath(workdir)}"]
            supervisor_python = rpath(python)
            if launch.image:
                supervisor_python, setup = self._host_python(bundle, remote_bundle)
                lines += setup
                words = container_words(
                    opts.container, launch.image, mount=root, workdir=workdir,
                    env_names=[*env, ENV_ATTEMPT, *launch.secrets], gpus=bool(launch.gpus),
                    name=container_name(run_id, index), extra=opts.container_args,
                ) + words
            elif not opts.python:
                lines.append(venv_setup_script(bundle.image, rpath(remote_bundle), rpath(venv)).rstrip())
            lines += [f"export {k}={rpath(v) if v.startswith('~/') else shlex.quote(v)}" for k, v in env.items()]
            lines.append(
                f"exec {supervisor_python} -m mudpuppy.backends.supervisor spawn --retries {launch.retries} "
                f"{rpath(workdir)} -- " + " ".join(words)
            )
            scripts[host] = "\n".join(lines) + "\n"
        text = "".join(f"# ---- host {h} (node {i})\n{scripts[h]}" for i, h in enumerate(hosts))
        return Plan(
            backend=self.name, run_id=run_id, bundle_path=str(bundle.path), bundle_digest=bundle.digest,
            script="# Generated by mudpuppy: one supervisor per host\n" + text, workdir=self.node_dir(run_id, 0),
            session=",".join(hosts), hosts=tuple(hosts), env=job_env(launch, run_id, self.node_dir(run_id, 0),
                                                                     remote_bundle),
            secrets=tuple(launch.secrets), retries=launch.retries,
            extra={"remote_bundle": remote_bundle, "host_scripts": scripts, "output_base": output_base},
        )

    def _host_python(self, bundle: Bundle, remote_bundle: str) -> tuple[str, list[str]]:
        """The supervisor runs on the host, outside the image: ``launch.ssh.python``, else the host's python3
        importing mudpuppy (pure stdlib on this path) straight from the bundle's wheel."""
        if self.launch.ssh.python:
            return rpath(self.launch.ssh.python), []
        wheel = bundle.image.get("wheel")
        if not wheel:
            raise UserError("launch.image needs launch.ssh.python (a host interpreter with mudpuppy) or a bundled "
                            "mudpuppy wheel")
        unpacked = f"{self.launch.ssh.workdir.rstrip('/')}/wheels/{bundle.digest[:16]}"
        return "python3", [
            f"[ -f {rpath(unpacked)}/{shlex.quote(wheel)} ] || {{ mkdir -p {rpath(unpacked)} && "
            f"tar -xzf {rpath(remote_bundle)} -C {rpath(unpacked)} {shlex.quote(wheel)}; }}",
            f"export PYTHONPATH={rpath(unpacked)}/{shlex.quote(wheel)}",
        ]

    def transport(self, host: str) -> Transport:
        return SSHTransport(host, self.launch.ssh)

    def submit(self, plan: Plan) -> Handle:
        secrets = {}
        for name in plan.secrets:
            if name not in os.environ:
                raise UserError(f"secret {name} is not set in your environment", hint="export it, then relaunch")
            secrets[name] = os.environ[name]
        remote_bundle = plan.extra["remote_bundle"]
        transports = [self.transport(h) for h in plan.hosts]
        try:
            for t in transports:  # connect everywhere first: a bad host fails before anything starts
                t.run("true", timeout=30)
            for t in transports:
                if t.run(f"test -f {rpath(remote_bundle)}", timeout=30).code != 0:
                    from pathlib import Path

                    t.put(Path(plan.bundle_path), remote_bundle)
            scripts = dict(plan.extra["host_scripts"])
            if len(transports) > 1:
                address = master_address(transports[0], transports[1:])
                if address:
                    scripts = {h: _with_master(s, _hostname(plan.hosts[0]), address) for h, s in scripts.items()}
            for host, t in zip(plan.hosts, transports, strict=True):
                res = t.run(login_shell(scripts[host]), timeout=1800, stdin=json.dumps(secrets))
                if res.code != 0:
                    tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
                    raise UserError(f"starting the job on {host} failed (exit {res.code}): {tail}")
        finally:
            for t in transports:
                t.close()
        return Handle(self.name, plan.session, plan.run_id)

    def _node_states(self, handle: Handle) -> list[dict[str, object]]:
        out = []
        for index, host in enumerate(handle.session.split(",")):
            d = rpath(self.node_dir(handle.id, index))
            t = self.transport(host)
            try:
                res = t.run(
                    f"cat {d}/state.json 2>/dev/null || echo '{{}}'; echo; "
                    f"pid=$(cat {d}/supervisor.pid 2>/dev/null) && kill -0 \"$pid\" 2>/dev/null "
                    "&& echo alive || echo dead",
                    timeout=30,
                )
            finally:
                t.close()
            lines = [line for line in res.stdout.splitlines() if line.strip()]
            try:
                state = json.loads(lines[0]) if lines else {}
            except json.JSONDecodeError:
                state = {}
            alive = bool(lines) and lines[-1] == "alive"
            if not state:
                state = {"state": "pending" if alive else "unknown", "reason": f"no state on {host}"}
            if state.get("state") in ("running", "pending") and not alive:
                state = {**state, "state": "failed", "reason": f"supervisor on {host} died"}
            out.append(state)
        return out

    def status(self, handle: Handle) -> RunStatus:
        states = self._node_states(handle)
        natives = [str(s.get("state")) for s in states]
        mapped = [map_state(n) for n in natives]
        for bad in (State.FAILED, State.CANCELLED):
            if bad in mapped:
                s = states[mapped.index(bad)]
                return RunStatus(bad, reason=str(s.get("reason") or ""), attempts=_int(s.get("attempts")),
                                 exit_code=_int(s.get("exit_code")), native=",".join(natives))
        if all(m == State.SUCCEEDED for m in mapped):
            return RunStatus(State.SUCCEEDED, attempts=_int(states[0].get("attempts")), exit_code=0,
                             native=",".join(natives))
        state = State.RUNNING if State.RUNNING in mapped else mapped[0]
        return RunStatus(state, attempts=_int(states[0].get("attempts")), native=",".join(natives))

    def logs(self, handle: Handle, follow: bool = False) -> Iterator[str]:
        host = handle.session.split(",")[0]
        d = rpath(self.node_dir(handle.id, 0))
        if follow:
            cmd = (
                f"pid=$(cat {d}/supervisor.pid 2>/dev/null || echo 1); "
                f"tail -n +1 -F --pid=\"$pid\" {d}/output.log 2>/dev/null"
            )
        else:
            cmd = f"cat {d}/output.log 2>/dev/null"
        t = self.transport(host)
        try:
            yield from t.stream(cmd)
        finally:
            t.close()

    def cancel(self, handle: Handle) -> None:
        for index, host in enumerate(handle.session.split(",")):
            d = rpath(self.node_dir(handle.id, index))
            t = self.transport(host)
            try:
                t.run(
                    f"pid=$(cat {d}/supervisor.pid 2>/dev/null) || exit 0; "
                    "kill -TERM -- -\"$pid\" 2>/dev/null || exit 0; "
                    f"for i in $(seq {CANCEL_GRACE_S * 5}); do kill -0 \"$pid\" 2>/dev/null || exit 0; sleep 0.2; "
                    "done; "
                    "kill -KILL -- -\"$pid\" 2>/dev/null; " + self._remove_container(handle.id, index) + "exit 0",
                    timeout=CANCEL_GRACE_S + 30,
                )
            finally:
                t.close()


    def _remove_container(self, run_id: str, index: int) -> str:
        """After SIGKILL a docker client dies but its container runs on: remove it by name."""
        if not self.launch.image or self.launch.ssh.container != "docker":
            return ""
        return f"docker rm -f {shlex.quote(container_name(run_id, index))} >/dev/null 2>&1; "


def _with_master(script: str, old: str, new: str) -> str:
    """The host script with torchrun's rendezvous moved from the name in ``launch.ssh.hosts`` to ``new``."""
    before, after = shlex.quote(f"--master-addr={old}"), shlex.quote(f"--master-addr={new}")
    if script.count(before) != 1:
        raise AssertionError(f"host script has {script.count(before)} copies of {before}")
    return script.replace(before, after)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None
