"""Reading and extending OpenSSH ``known_hosts`` files without paramiko's two sharp edges.

paramiko's loader raises on marker lines (``@cert-authority``, ``@revoked``) that OpenSSH writes and reads
routinely, and its ``save_host_keys`` rewrites the whole file from what it understood, dropping comments, markers
and any line it skipped. Here every line is read on its own: plain entries are trusted, ``@revoked`` keys are
kept to refuse, ``@cert-authority`` lines are counted (paramiko cannot verify host certificates) and a line
that cannot be parsed is skipped as OpenSSH does. A key learnt on first use is appended as one line, so the
user's file keeps everything it had.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class KnownHosts:
    """Trusted entries (a ``paramiko.HostKeys``), revoked key blobs and how many CA lines were skipped."""

    keys: Any
    revoked: set[tuple[str, str]] = field(default_factory=set)
    cert_authorities: int = 0

    def knows(self, host_id: str, key: Any) -> bool:
        return bool(self.keys.check(host_id, key))

    def is_revoked(self, key: Any) -> bool:
        return (key.get_name(), key.get_base64()) in self.revoked


def host_id(host: str, port: int) -> str:
    """The name OpenSSH files a host under: bare on port 22, ``[host]:port`` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


def load(paths: list[Path]) -> KnownHosts:
    from paramiko.hostkeys import HostKeyEntry, HostKeys, InvalidHostKey

    result = KnownHosts(keys=HostKeys())
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            marker = ""
            if line.startswith("@"):
                marker, _, line = line.partition(" ")
                line = line.strip()
            try:
                entry = HostKeyEntry.from_line(line, number)
            except (InvalidHostKey, ValueError, IndexError):
                entry = None
            if marker == "@cert-authority":
                result.cert_authorities += 1
                continue
            if entry is None or entry.key is None:
                continue
            if marker == "@revoked":
                result.revoked.add((entry.key.get_name(), entry.key.get_base64()))
            elif not marker:
                for name in entry.hostnames:
                    result.keys.add(name, entry.key.get_name(), entry.key)
    return result


def append(path: Path, host: str, key: Any) -> None:
    """Add one ``host keytype base64`` line at the end, creating the file (0600) if needed; nothing is rewritten."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = f"{host} {key.get_name()} {key.get_base64()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size:
            with path.open("rb") as handle:
                handle.seek(size - 1)
                if handle.read(1) != b"\n":
                    line = b"\n" + line
        os.write(fd, line)
    finally:
        os.close(fd)
