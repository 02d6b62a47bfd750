"""known_hosts files as OpenSSH users keep them (comments, @cert-authority, @revoked, hashed names) against a
real sshd: no paramiko traceback, trust-on-first-use appends one line and keeps the rest, revoked keys refused.
OpenSSH's own ``ssh-keygen -F`` is the independent judge of what the file says afterwards.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mudpuppy.backends.transport import SSHTransport
from mudpuppy.launcher.config.schema.launch import SSHOptions
from mudpuppy.launcher.errors import UserError
from mudpuppy.tests.infra.services import Sshd

pytestmark = pytest.mark.timeout(120)


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


@pytest.fixture
def other_key(tmp_path: Path) -> str:
    return keygen(tmp_path / "other")


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the file under test counts: ~/.ssh/known_hosts is the test's own empty home."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def server_key(sshd: Sshd) -> str:
    return " ".join(sshd.host_pub.split()[:2])


def connect(sshd: Sshd, known: Path, *, tofu: bool = False) -> str:
    options = SSHOptions(key_file=str(sshd.key_file), known_hosts=str(known), trust_on_first_use=tofu,
                         connect_timeout=5)
    transport = SSHTransport(sshd.host, options)
    try:
        return transport.run("echo connected").stdout.strip()
    finally:
        if transport._conn is not None:
            transport._conn.close()


def marker_file(path: Path, other_key: str, extra: str = "") -> str:
    text = (
        "# hosts of the lab, kept by hand\n"
        f"@cert-authority *.lab.example {other_key}\n"
        "\n"
        f"@revoked * {other_key}\n"
        "# an entry with a bad key is skipped, as OpenSSH does\n"
        "broken.example ssh-ed25519 AAAA-not-base64\n"
        f"{extra}"
        "# trailing comment\n"
    )
    path.write_text(text)
    return text


def test_marker_lines_and_comments_are_read_not_a_traceback(sshd: Sshd, tmp_path: Path, other_key: str) -> None:
    known = tmp_path / "known_hosts"
    text = marker_file(known, other_key, extra=f"[127.0.0.1]:{sshd.port} {server_key(sshd)}\n")
    assert connect(sshd, known) == "connected"
    assert known.read_text() == text


def test_hashed_entries_are_honoured(sshd: Sshd, tmp_path: Path, other_key: str) -> None:
    known = tmp_path / "known_hosts"
    marker_file(known, other_key, extra=f"[127.0.0.1]:{sshd.port} {server_key(sshd)}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True, timeout=30)
    assert "|1|" in known.read_text()
    assert connect(sshd, known) == "connected"


def test_unknown_host_with_only_a_cert_authority_is_one_line(sshd: Sshd, tmp_path: Path, other_key: str) -> None:
    known = tmp_path / "known_hosts"
    text = marker_file(known, other_key)
    with pytest.raises(UserError) as info:
        connect(sshd, known)
    message = info.value.one_line()
    assert f"host key of {sshd.user}@127.0.0.1:{sshd.port} is not in {known}" in message
    assert "1 @cert-authority line(s) cannot be used" in message and "trust_on_first_use" in message
    assert known.read_text() == text


def test_trust_on_first_use_appends_and_keeps_comments_and_markers(sshd: Sshd, tmp_path: Path,
                                                                   other_key: str) -> None:
    known = tmp_path / "known_hosts"
    text = marker_file(known, other_key).rstrip("\n")  # no final newline: the append must add one
    known.write_text(text)
    assert connect(sshd, known, tofu=True) == "connected"
    after = known.read_text()
    assert after == text + f"\n[127.0.0.1]:{sshd.port} {server_key(sshd)}\n"
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{sshd.port}", "-f", str(known)],
                           capture_output=True, text=True, timeout=30)
    assert found.returncode == 0 and server_key(sshd) in found.stdout
    assert connect(sshd, known, tofu=True) == "connected"  # known now: nothing more is appended
    assert known.read_text() == after
    assert connect(sshd, known) == "connected"  # and it is trusted without trust_on_first_use


def test_trust_on_first_use_creates_a_private_file(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "new" / "known_hosts"
    assert connect(sshd, known, tofu=True) == "connected"
    assert known.read_text() == f"[127.0.0.1]:{sshd.port} {server_key(sshd)}\n"
    assert known.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("tofu", [False, True])
def test_revoked_server_key_is_refused(sshd: Sshd, tmp_path: Path, tofu: bool) -> None:
    known = tmp_path / "known_hosts"
    listed = f"[127.0.0.1]:{sshd.port} {server_key(sshd)}\n" if not tofu else ""
    text = f"# revoked after a compromise\n@revoked * {server_key(sshd)}\n{listed}"
    known.write_text(text)
    with pytest.raises(UserError, match=r"is marked @revoked in known_hosts; refusing to use this host"):
        connect(sshd, known, tofu=tofu)
    assert known.read_text() == text
