"""Start and stop real services on loopback for the integration tests: sshd and a 2-node SLURM cluster.

Facts behind the SLURM layout are in shared/notes/slurm.md. Everything runs as child processes of the test
session (no systemd), in a fresh folder under /tmp that the slurm and munge users can read, and is stopped by
pid in ``stop()``. Fixed SLURM ports and the /etc/hosts tag mean one cluster per machine at a time.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HOSTS_TAG = "# mudpuppy-test-slurm"
NODES = {"n1": ("127.0.0.11", 17001), "n2": ("127.0.0.12", 17002)}


def missing_tools(*names: str) -> list[str]:
    return [n for n in names if shutil.which(n) is None and not Path(f"/usr/sbin/{n}").exists()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited ({proc.returncode}): {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"service did not open {host}:{port} in {timeout}s: {log.read_text()[-2000:]}")


def _stop(procs: list[subprocess.Popen[bytes]], timeout: float = 10) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
    for proc in reversed(procs):
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


@dataclass
class Sshd:
    dir: Path
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    host_pub: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        _stop(self.procs)
        shutil.rmtree(self.dir, ignore_errors=True)


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
    return path.with_suffix(".pub").read_text().strip()


def start_sshd(set_env: dict[str, str] | None = None) -> Sshd:
    """sshd on 127.0.0.1 with generated host and user keys, key auth only, sftp enabled."""
    root = Path(tempfile.mkdtemp(prefix="mudpuppy-sshd-"))
    root.chmod(0o755)
    host_pub = _keygen(root / "host_key")
    user_pub = _keygen(root / "user_key")
    (root / "authorized_keys").write_text(user_pub + "\n")
    (root / "authorized_keys").chmod(0o600)
    port = free_port()
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {root / 'host_key'}",
        f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "StrictModes no",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
        "LogLevel VERBOSE",
    ]
    if set_env:
        lines.append("SetEnv " + " ".join(f"{k}={v}" for k, v in set_env.items()))
    (root / "sshd_config").write_text("\n".join(lines) + "\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = root / "sshd.log"
    proc = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(root / "sshd_config")],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115 (closed with the process)
    )
    try:
        _wait_port("127.0.0.1", port, proc, log)
    except Exception:
        _stop([proc])
        raise
    known = root / "known_hosts"
    key = " ".join(host_pub.split()[:2])
    known.write_text(f"[127.0.0.1]:{port} {key}\n[localhost]:{port} {key}\n")  # two names: a 2-host run
    return Sshd(root, port, getpass.getuser(), root / "user_key", known, host_pub, [proc])


@dataclass
class SlurmCluster:
    dir: Path
    conf: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    proctrack: str = "linuxproc"
    uts: bool = False

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout, check=False
        )

    def stop(self) -> None:
        self._stop_daemons()
        _untag_hosts()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _stop_daemons(self) -> None:
        with contextlib.suppress(Exception):
            self.run("scancel", "--full", "--signal=KILL", f"--user={getpass.getuser()}", timeout=10)
        time.sleep(0.5)
        _stop(self.procs)
        self.procs.clear()

    def restart(self, proctrack: str, timeout: float = 30) -> None:
        """Stop every daemon, switch ``ProctrackType`` (slurmd reads it only at start) and start them again."""
        self._stop_daemons()
        self.proctrack = proctrack
        _start_daemons(self, timeout)


def _tag_hosts() -> None:
    _untag_hosts()
    with open("/etc/hosts", "a") as fh:
        for name, (addr, _port) in NODES.items():
            fh.write(f"{addr} {name} {HOSTS_TAG}\n")


def _untag_hosts() -> None:
    path = Path("/etc/hosts")
    try:
        lines = path.read_text().splitlines(keepends=True)
    except OSError:
        return
    kept = [line for line in lines if HOSTS_TAG not in line]
    if kept != lines:
        path.write_text("".join(kept))  # in place: /etc/hosts may be a bind mount


SLURM_CONF = """\
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=slurm
SlurmctldPort=6817
AuthType=auth/munge
AuthInfo=socket={dir}/munge/munge.sock,cred_expire=5
StateSaveLocation={dir}/ctld
SlurmdSpoolDir={dir}/spool_%n
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd_%n.pid
SlurmctldLogFile={dir}/log/slurmctld.log
SlurmdLogFile={dir}/log/slurmd_%n.log
JobCompType=jobcomp/filetxt
JobCompLoc={dir}/log/jobcomp.txt
ProctrackType=proctrack/{proctrack}
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1,batch_sched_delay=0
ReturnToService=2
KillWait=5
MinJobAge=300
SlurmctldParameters=preempt_send_user_signal
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
{nodes}
# debug (the default) is preemptible: a job in high that needs its nodes requeues ours after GraceTime seconds,
# and preempt_send_user_signal delivers the job's --signal=B:USR1 at once, so the runtime saves in the grace.
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=30
PartitionName=high Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
"""


def start_slurm(timeout: float = 30, proctrack: str = "linuxproc") -> SlurmCluster:
    """munged + slurmctld + two slurmd (n1, n2), each with its own hostname and loopback address."""
    root = Path(tempfile.mkdtemp(prefix="mudpuppy-slurm-"))
    root.chmod(0o755)
    for sub, owner in (("munge", "munge"), ("ctld", "slurm"), ("log", "slurm")):
        (root / sub).mkdir()
        shutil.chown(root / sub, owner, owner)
    (root / "log").chmod(0o777)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    shutil.chown(key, "munge", "munge")
    cluster = SlurmCluster(root, root / "slurm.conf", proctrack=proctrack)
    _tag_hosts()
    cluster.uts = shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--uts", "true"], capture_output=True, check=False, timeout=10
    ).returncode == 0
    try:
        _start_daemons(cluster, timeout)
        return cluster
    except BaseException:
        cluster.stop()
        raise


def _start_daemons(cluster: SlurmCluster, timeout: float) -> None:
    root, conf = cluster.dir, cluster.conf
    nodes = "\n".join(
        f"NodeName={name} NodeAddr={addr} Port={port} CPUs=1 RealMemory=1000 State=UNKNOWN"
        for name, (addr, port) in NODES.items()
    )
    conf.write_text(SLURM_CONF.format(dir=root, nodes=nodes, proctrack=cluster.proctrack))
    # proctrack/cgroup reads cgroup.conf next to slurm.conf: v1 (freezer) where mounted, as on this machine kind
    plugin = "cgroup/v1" if Path("/sys/fs/cgroup/freezer").is_dir() else "cgroup/v2"
    (root / "cgroup.conf").write_text(f"CgroupPlugin={plugin}\nCgroupAutomount=no\nConstrainCores=no\n")
    env = {**os.environ, **cluster.env}
    key = root / "munge" / "munge.key"

    def spawn(name: str, argv: list[str]) -> None:
        log = open(root / "log" / f"{name}.stdout", "ab")  # noqa: SIM115 (closed with the process)
        cluster.procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))

    (root / "munge" / "munge.sock").unlink(missing_ok=True)
    spawn("munged", ["runuser", "-u", "munge", "--", "/usr/sbin/munged", "-F", "--force",
                     f"--socket={root}/munge/munge.sock", f"--key-file={key}",
                     f"--pid-file={root}/munge/munged.pid", f"--log-file={root}/munge/munged.log",
                     f"--seed-file={root}/munge/munged.seed"])
    _wait_file(root / "munge" / "munge.sock", cluster, timeout)
    spawn("slurmctld", ["/usr/sbin/slurmctld", "-D", "-f", str(conf)])
    for name in NODES:
        argv = ["/usr/sbin/slurmd", "-D", "-N", name, "-f", str(conf)]
        if cluster.uts:
            argv = ["unshare", "--uts", "sh", "-c", f"hostname {name} && exec " + " ".join(argv)]
        spawn(f"slurmd_{name}", argv)
    deadline = time.monotonic() + timeout
    while True:
        for proc in cluster.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a SLURM daemon exited ({proc.args}): {_logs(root)}")
        res = cluster.run("sinfo", "-h", "-t", "idle", "-o", "%D", timeout=10)
        if res.stdout.strip() == str(len(NODES)):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"SLURM nodes not idle after {timeout}s ({res.stdout!r}): {_logs(root)}")
        time.sleep(0.3)


def _wait_file(path: Path, cluster: SlurmCluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if any(p.poll() is not None for p in cluster.procs) or time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear: {_logs(cluster.dir)}")
        time.sleep(0.05)


def _logs(root: Path) -> str:
    out = []
    for log in sorted((root / "log").glob("*")) + sorted((root / "munge").glob("*.log")):
        with contextlib.suppress(OSError):
            out.append(f"--- {log.name}: {log.read_text()[-800:]}")
    return "\n".join(out)


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


__all__ = ["Sshd", "SlurmCluster", "free_port", "missing_tools", "signal", "start_slurm", "start_sshd", "wait_for"]
