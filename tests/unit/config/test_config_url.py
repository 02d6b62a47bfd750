"""Config URLs against real servers on 127.0.0.1: https with a self-signed certificate made here, plain http.

What is checked is what a hostile or broken server can do: serve plain http, redirect https to http, send more
than a config could be, or trickle bytes so that no single read ever times out.
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mudpuppy.launcher.config import load_config
from mudpuppy.launcher.config import source as config_source
from mudpuppy.launcher.errors import UserError
from tests.unit.config.minimal import BASE

pytestmark = pytest.mark.timeout(60)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _Handler(http.server.BaseHTTPRequestHandler):
    plain_port = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        if self.path == "/cfg.yml":
            self._send(BASE.encode())
        elif self.path == "/huge.yml":
            self._send(b"#" * (config_source.MAX_CONFIG_BYTES + 10))
        elif self.path == "/to-http.yml":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.plain_port}/cfg.yml")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/to-https.yml":
            self.send_response(301)
            self.send_header("Location", "/cfg.yml")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/trickle.yml":
            body = BASE.encode() * 50
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for byte in body:  # each read gets a byte well within any per-read timeout
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.05)
        else:
            self.send_error(404, "Not Found")

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(server: http.server.HTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = _self_signed(folder)
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    secure = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    _Handler.plain_port = plain.server_address[1]
    _serve(plain)
    _serve(secure)
    try:
        yield f"https://127.0.0.1:{secure.server_address[1]}", f"http://127.0.0.1:{plain.server_address[1]}", cert
    finally:
        plain.shutdown()
        secure.shutdown()


@pytest.fixture
def trusted(servers: tuple[str, str, Path], monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """Trust the test certificate the way a user would trust a private CA: OpenSSL's SSL_CERT_FILE."""
    https, plain, cert = servers
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    return https, plain


def test_https_config_loads_and_http_errors_are_one_line(trusted: tuple[str, str]) -> None:
    https, _ = trusted
    assert load_config(f"{https}/cfg.yml").config.base_model == "examples/tiny-llama"
    assert load_config(f"{https}/to-https.yml").config.base_model == "examples/tiny-llama"
    with pytest.raises(UserError, match="HTTP 404"):
        load_config(f"{https}/missing.yml")


def test_untrusted_certificate_is_refused(servers: tuple[str, str, Path], monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    https, _, _ = servers
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    with pytest.raises(UserError, match="cannot fetch config .*CERTIFICATE_VERIFY_FAILED"):
        load_config(f"{https}/cfg.yml")


def test_plain_http_is_refused_before_connecting(trusted: tuple[str, str]) -> None:
    _, plain = trusted
    with pytest.raises(UserError, match="plain http; refused"):
        load_config(f"{plain}/cfg.yml")


def test_https_to_http_redirect_is_refused(trusted: tuple[str, str]) -> None:
    https, plain = trusted
    with pytest.raises(UserError, match=f"redirects to {plain}/cfg.yml, which is not https"):
        load_config(f"{https}/to-http.yml")


def test_oversized_body_is_refused(trusted: tuple[str, str]) -> None:
    https, _ = trusted
    with pytest.raises(UserError, match="larger than 4 MiB"):
        load_config(f"{https}/huge.yml")


def test_trickling_server_hits_the_total_deadline(trusted: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    https, _ = trusted
    monkeypatch.setattr(config_source, "URL_DEADLINE_S", 1.0)
    started = time.monotonic()
    with pytest.raises(UserError, match="no complete answer within 1 s"):
        load_config(f"{https}/trickle.yml")
    assert time.monotonic() - started < 3


def test_unreachable_url_is_one_line() -> None:
    with pytest.raises(UserError, match="cannot fetch config"):
        load_config("https://127.0.0.1:9/cfg.yml")
