"""Processes the suite runs: a real Synapse on loopback, and the authorisation service binary.

Synapse gets a throwaway CA (made here with `cryptography`) and a leaf for IP 127.0.0.1, serves federation
over TLS on its server-name port and the client API over plain HTTP on another port. The service trusts the
CA through SSL_CERT_FILE, so TLS is verified, not skipped.
"""

import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SYNAPSE_START_TIMEOUT = 60.0
SERVICE_START_TIMEOUT = 15.0
HTTP_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, body: Any = None, token: Optional[str] = None) -> HttpResponse:
    """One request with a JSON body (if any); never raises for an HTTP error status."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            return HttpResponse(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        return HttpResponse(error.code, dict(error.headers.items()), error.read())


def wait_until(what: str, ready, process: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{tail(log)}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready within {timeout} s:\n{tail(log)}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class TestPki:
    """A CA and a leaf certificate for IP 127.0.0.1, written as PEM files into `directory`."""

    def __init__(self, directory: Path) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pytest Synapse CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf_cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.cert_file = directory / "tls.crt"
        self.key_file = directory / "tls.key"
        self.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        self.cert_file.write_bytes(leaf_cert.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(
            leaf_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


@dataclass
class MatrixUser:
    user_id: str
    device_id: str
    access_token: str


class Synapse:
    """A Synapse homeserver on loopback; `server_name` is `127.0.0.1:<federation TLS port>`."""

    def __init__(self, directory: Path, pki: TestPki) -> None:
        self.directory = directory
        self.federation_port = free_port()
        self.client_port = free_port()
        self.server_name = f"127.0.0.1:{self.federation_port}"
        self.client_url = f"http://127.0.0.1:{self.client_port}"
        self.shared_secret = os.urandom(16).hex()
        self.log = directory / "synapse.log"
        config = directory / "homeserver.yaml"
        config.write_text(json.dumps(self._config(pki), indent=2))  # JSON is YAML
        (directory / "log.yaml").write_text(json.dumps(self._log_config()))
        self._write_signing_key()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver", "--config-path", str(config)],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                "Synapse",
                lambda: http("GET", f"{self.client_url}/_matrix/client/versions").status == 200,
                self.process,
                SYNAPSE_START_TIMEOUT,
                self.log,
            )
        except BaseException:
            stop(self.process)
            raise

    def _config(self, pki: TestPki) -> dict:
        d = self.directory
        generous = {"per_second": 1000, "burst_count": 1000}
        return {
            "server_name": self.server_name,
            "pid_file": str(d / "homeserver.pid"),
            "listeners": [
                {
                    "port": self.client_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                },
                {
                    "port": self.federation_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": True,
                    "resources": [{"names": ["federation"], "compress": False}],
                },
            ],
            "tls_certificate_path": str(pki.cert_file),
            "tls_private_key_path": str(pki.key_file),
            "database": {"name": "sqlite3", "args": {"database": str(d / "homeserver.db")}},
            "log_config": str(d / "log.yaml"),
            "media_store_path": str(d / "media"),
            "signing_key_path": str(d / "signing.key"),
            "registration_shared_secret": self.shared_secret,
            "enable_registration": False,
            "report_stats": False,
            "suppress_key_server_warning": True,
            "trusted_key_servers": [],
            "macaroon_secret_key": os.urandom(16).hex(),
            "form_secret": os.urandom(16).hex(),
            "rc_message": generous,
            "rc_registration": generous,
            "rc_login": {"address": generous, "account": generous, "failed_attempts": generous},
            "rc_joins": {"local": generous, "remote": generous},
            "rc_room_creation": generous,
            "caches": {"global_factor": 0.1},
            "event_cache_size": "1K",
            "url_preview_enabled": False,
            "enable_metrics": False,
        }

    def _log_config(self) -> dict:
        return {
            "version": 1,
            "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
            "handlers": {
                "console": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
            },
            "root": {"level": "WARNING", "handlers": ["console"]},
            "disable_existing_loggers": False,
        }

    def _write_signing_key(self) -> None:
        from signedjson.key import generate_signing_key, write_signing_keys

        with (self.directory / "signing.key").open("w") as f:
            write_signing_keys(f, [generate_signing_key("a_pytest")])

    def register(self, localpart: str) -> MatrixUser:
        """Registers a user with the shared-secret admin API (registration is otherwise closed)."""
        url = f"{self.client_url}/_synapse/admin/v1/register"
        nonce = http("GET", url).json()["nonce"]
        password = os.urandom(12).hex()
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        for part in (nonce, localpart, password):
            mac.update(part.encode())
            mac.update(b"\x00")
        mac.update(b"notadmin")
        response = http(
            "POST",
            url,
            {"nonce": nonce, "username": localpart, "password": password, "admin": False, "mac": mac.hexdigest()},
        )
        assert response.status == 200, response.body
        body = response.json()
        return MatrixUser(body["user_id"], body["device_id"], body["access_token"])

    def openid_token(self, user: MatrixUser) -> dict:
        """`POST /_matrix/client/v3/user/{userId}/openid/request_token`, returned as the homeserver sent it."""
        user_id = urllib.parse.quote(user.user_id, safe="")
        response = http(
            "POST",
            f"{self.client_url}/_matrix/client/v3/user/{user_id}/openid/request_token",
            {},
            token=user.access_token,
        )
        assert response.status == 200, response.body
        return response.json()

    def create_room(self, user: MatrixUser) -> str:
        response = http("POST", f"{self.client_url}/_matrix/client/v3/createRoom", {}, token=user.access_token)
        assert response.status == 200, response.body
        return response.json()["room_id"]

    def close(self) -> None:
        stop(self.process)


class AuthService:
    """The `matrixrtc-auth` binary with a controlled environment, on a free loopback port."""

    def __init__(self, binary: str, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        full_env = {"LIVEKIT_JWT_BIND": f"127.0.0.1:{self.port}", "LIVEKIT_LOG_LEVEL": "debug", **env}
        self.process = subprocess.Popen(
            [binary],
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                "matrixrtc-auth",
                lambda: http("GET", f"{self.url}/healthz").status == 200,
                self.process,
                SERVICE_START_TIMEOUT,
                log,
            )
        except BaseException:
            stop(self.process)
            raise

    def post(self, path: str, body: Any) -> HttpResponse:
        return http("POST", f"{self.url}{path}", body)

    def close(self) -> None:
        stop(self.process)
