"""Where backend commands run: this machine's shell, or a host over SSH (fabric).

The SLURM backend submits through either (a local ``sbatch`` or one on a login node); the SSH backend uses the
SSH transport per host. Connection problems become one-line ``UserError``s naming the host and the fix.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mudpuppy.backends import known_hosts
from mudpuppy.launcher.errors import UserError

if TYPE_CHECKING:
    from mudpuppy.launcher.config.schema.launch import SSHOptions


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


def rpath(path: str) -> str:
    """Quote a remote path for the shell, keeping a leading ``~/`` expandable."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


class Transport(Protocol):
    name: str

    def run(self, command: str, *, timeout: float = 60, stdin: str | None = None) -> Result: ...

    def put(self, local: Path, remote: str) -> None: ...

    def stream(self, command: str) -> Iterator[str]: ...

    def close(self) -> None: ...


class LocalTransport:
    name = "local"

    def run(self, command: str, *, timeout: float = 60, stdin: str | None = None) -> Result:
        try:
            proc = subprocess.run(
                ["bash", "-c", command], input=stdin, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            return Result(124, "", f"timed out after {timeout:.0f}s: {command}")
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def put(self, local: Path, remote: str) -> None:
        target = Path(remote).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
        tmp.touch(mode=0o600)  # owner-only while bytes land; then the source's mode, as fabric's put keeps it
        shutil.copyfile(local, tmp)
        shutil.copymode(local, tmp)
        tmp.replace(target)

    def stream(self, command: str) -> Iterator[str]:
        proc = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        try:
            yield from proc.stdout
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait()

    def close(self) -> None:
        pass


class SSHTransport:
    """One host over SSH. Host keys are checked against known_hosts unless trust_on_first_use is set."""

    def __init__(self, host: str, options: SSHOptions) -> None:
        self.options = options
        user, _, hostport = host.rpartition("@")
        hostname, _, port = hostport.partition(":")
        self.host = hostname
        self.user = user or options.user
        self.port = int(port) if port else options.port
        self.name = host
        self._conn: Any = None

    def _connect(self) -> Any:
        if self._conn is not None:
            return self._conn
        try:
            import paramiko
            from fabric import Connection
        except ImportError:
            raise UserError(
                "the ssh backend needs fabric", hint="pip install 'mudpuppy[ssh]'"
            ) from None
        opts = self.options
        connect_kwargs: dict[str, Any] = {"banner_timeout": opts.connect_timeout, "auth_timeout": opts.connect_timeout}
        if opts.key_file:
            key = Path(opts.key_file).expanduser()
            if not key.is_file():
                raise UserError(f"launch.ssh.key_file {key} does not exist")
            connect_kwargs.update(key_filename=str(key), look_for_keys=False, allow_agent=False)
        conn = Connection(
            self.host, user=self.user, port=self.port, connect_timeout=int(opts.connect_timeout),
            connect_kwargs=connect_kwargs,
        )
        known = Path(opts.known_hosts).expanduser() if opts.known_hosts else Path("~/.ssh/known_hosts").expanduser()
        trusted = known_hosts.load([Path("~/.ssh/known_hosts").expanduser(), known])
        # ProxyJump hops are Connections of their own, each made by fabric with AutoAddPolicy: the same host-key
        # policy goes on every one, and each is opened (first hop first) so a refusal names the hop it concerns.
        chain = [conn]
        while isinstance(chain[-1].gateway, Connection):
            chain.append(chain[-1].gateway)
        for link in reversed(chain):
            if link is not conn:
                link.connect_timeout = int(opts.connect_timeout)
            self._open_checked(link, trusted, known, paramiko)
        self._conn = conn
        return conn

    def _open_checked(self, conn: Any, trusted: known_hosts.KnownHosts, known: Path, paramiko: Any) -> None:
        """Open one link of the chain: host key checked against ``trusted`` (recorded when trusting on first use),
        @revoked keys refused, every failure one ``UserError`` naming ``user@host:port``."""
        client = conn.client
        for name in list(trusted.keys):
            for keytype, key in trusted.keys[name].items():
                client.get_host_keys().add(name, keytype, key)
        if self.options.trust_on_first_use:
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        where = f"{conn.user}@{conn.host}:{conn.port}"
        try:
            conn.open()
        except paramiko.AuthenticationException:
            raise UserError(
                f"ssh authentication to {where} failed",
                hint="check launch.ssh.key_file / launch.ssh.user, or add your key to ssh-agent",
            ) from None
        except paramiko.SSHException as exc:
            if "known_hosts" in str(exc) or "not found in" in str(exc):
                ca = (f"; its {trusted.cert_authorities} @cert-authority line(s) cannot be used (paramiko does not "
                      "verify host certificates)") if trusted.cert_authorities else ""
                raise UserError(
                    f"host key of {where} is not in {known}{ca}",
                    hint="add it with ssh-keyscan, or set launch.ssh.trust_on_first_use: true",
                ) from None
            raise UserError(f"ssh to {where} failed: {exc}") from None
        except (TimeoutError, OSError) as exc:
            raise UserError(
                f"cannot reach {where}: {getattr(exc, 'strerror', None) or exc}",
                hint="check the host name, port and that sshd is running",
            ) from None
        server_key = client.get_transport().get_remote_server_key()
        if trusted.is_revoked(server_key):
            conn.close()
            raise UserError(f"host key of {where} ({server_key.get_name()}) is marked @revoked in known_hosts; "
                            "refusing to use this host", hint="ask the host's admin for its current key")
        name = known_hosts.host_id(conn.host, int(conn.port))
        if self.options.trust_on_first_use and not trusted.knows(name, server_key):
            known_hosts.append(known, name, server_key)
            trusted.keys.add(name, server_key.get_name(), server_key)

    def run(self, command: str, *, timeout: float = 60, stdin: str | None = None) -> Result:
        """One command on a fresh channel: stdin written then closed, both outputs drained, exit code kept."""
        import time

        channel = self._connect().client.get_transport().open_session()
        channel.settimeout(timeout)
        channel.exec_command(f"bash -c {shlex.quote(command)}")
        if stdin:
            with contextlib.suppress(OSError):  # the command may exit without reading it all
                channel.sendall(stdin.encode())
        with contextlib.suppress(OSError):
            channel.shutdown_write()
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            while True:
                busy = False
                if channel.recv_ready():
                    out += channel.recv(65536)
                    busy = True
                if channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                    busy = True
                if not busy:
                    if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                        break
                    if time.monotonic() > deadline:
                        return Result(124, out.decode(errors="replace"), f"timed out after {timeout:.0f}s on "
                                      f"{self.name}: {command}")
                    time.sleep(0.01)
            code = channel.recv_exit_status()
        finally:
            channel.close()
        return Result(code, out.decode(errors="replace"), err.decode(errors="replace"))

    def put(self, local: Path, remote: str) -> None:
        conn = self._connect()
        home = self.run("printf %s \"$HOME\"").stdout
        target = remote.replace("~", home, 1) if remote.startswith("~") else remote
        parent = target.rsplit("/", 1)[0]
        tmp = f"{target}.{uuid.uuid4().hex[:8]}.part"
        self.run(f"mkdir -p {shlex.quote(parent)}")
        conn.put(str(local), remote=tmp)
        res = self.run(f"mv -f {shlex.quote(tmp)} {shlex.quote(target)}")
        if res.code != 0:
            raise UserError(f"upload to {self.name}:{target} failed: {res.stderr.strip()}")

    def stream(self, command: str) -> Iterator[str]:
        conn = self._connect()
        transport = conn.client.get_transport()
        channel = transport.open_session()
        channel.exec_command(f"bash -c {shlex.quote(command)}")
        buf = b""
        try:
            while True:
                data = channel.recv(65536)
                if not data:
                    break
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace") + "\n"
            if buf:
                yield buf.decode(errors="replace")
        finally:
            channel.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
