"""A config fetched from a URL may bundle local files only from the folder `launch` runs in: someone else's config
must not ship ~/.aws/credentials to a cluster. A local config may name any path, as in Axolotl.

Driven through the real loader and CLI: `mudpuppy launch https://127.0.0.1:PORT/... --dry-run` in a child process,
against an https server on loopback whose self-signed certificate is trusted through SSL_CERT_FILE.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import os
import shutil
import ssl
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mudpuppy.launcher.registry import cache_dir

pytestmark = pytest.mark.timeout(180)

EXAMPLES = Path(__file__).resolve().parents[3] / "templates" / "examples"
SECRET = "aws_secret_access_key = do-not-ship-me\n"


def config_text(data_path: str) -> str:
    return (f"base_model: tiny-llama\nlearning_rate: 1e-4\noutput_dir: out\n"
            f"datasets:\n  - path: {data_path}\n    type: alpaca\n")


CONFIGS = {
    "/home-secret.yml": config_text("~/.aws/credentials"),
    "/link-to-secret.yml": config_text("data/link.jsonl"),
    "/climbs-out.yml": config_text("../home/.aws/credentials"),
    "/inside.yml": config_text("data/ok.jsonl"),
}


def _certificate(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mudpuppy test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _Configs(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        body = CONFIGS.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body.encode())))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    cert, key = _certificate(tmp_path_factory.mktemp("tls"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Configs)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """tmp/home/.aws/credentials (the secret), tmp/work (where `launch` runs) with the model and data."""
    secret = tmp_path / "home" / ".aws" / "credentials"
    secret.parent.mkdir(parents=True)
    secret.write_text(SECRET)
    work = tmp_path / "work"
    shutil.copytree(EXAMPLES / "tiny-llama", work / "tiny-llama")
    (work / "data").mkdir()
    shutil.copy(EXAMPLES / "data" / "alpaca_tiny.jsonl", work / "data" / "ok.jsonl")
    os.symlink(secret, work / "data" / "link.jsonl")
    return work


def launch(work: Path, location: str, cert: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(work.parent / "home"), "SSL_CERT_FILE": str(cert),
           "MUDPUPPY_STATE_DIR": str(work.parent / "state"), "MUDPUPPY_CACHE_DIR": str(cache_dir())}
    return subprocess.run([sys.executable, "-m", "mudpuppy", "launch", location, "--backend", "local", "--dry-run"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=work)


def bundled_bytes(work: Path) -> list[bytes]:
    out = []
    for tarball in (work.parent / "state" / "bundles").glob("*.tar.gz"):
        with tarfile.open(tarball) as tar:
            out += [tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()]  # type: ignore[union-attr]
    return out


@pytest.mark.parametrize("name", ["/home-secret.yml", "/link-to-secret.yml", "/climbs-out.yml"])
def test_url_config_cannot_bundle_files_from_outside_the_working_folder(
    https: tuple[str, Path], project: Path, name: str
) -> None:
    url, cert = https
    proc = launch(project, url + name, cert)
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "datasets[0].path" in lines[0] and "outside the working folder" in lines[0]
    assert not any(SECRET.encode() in body for body in bundled_bytes(project))


def test_url_config_bundles_files_inside_the_working_folder(https: tuple[str, Path], project: Path) -> None:
    url, cert = https
    proc = launch(project, url + "/inside.yml", cert)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (project / "data" / "ok.jsonl").read_bytes() in bundled_bytes(project)


def test_local_config_may_name_any_path(project: Path, https: tuple[str, Path]) -> None:
    _, cert = https
    outside = project.parent / "elsewhere" / "data.jsonl"
    outside.parent.mkdir()
    shutil.copy(project / "data" / "ok.jsonl", outside)
    (project / "cfg.yml").write_text(config_text(str(outside)))
    proc = launch(project, "cfg.yml", cert)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert outside.read_bytes() in bundled_bytes(project)
