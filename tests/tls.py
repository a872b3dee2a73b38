"""Certificates made by the test run (openssl CLI) and a redis-server that speaks only TLS."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from rsmq_core.connection import ConnectionOptions, sync_client
from support.redis_server import RedisServer

# Extensions a strict verifier (Python 3.13's VERIFY_X509_STRICT) wants to see.
CA_EXT = """\
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""
LEAF_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
authorityKeyIdentifier = keyid
subjectKeyIdentifier = hash
"""


@dataclass(frozen=True)
class Certificates:
    """PEM files: a CA, a server certificate for 127.0.0.1 only (so ``localhost`` fails the
    host name check) and a client certificate signed by it, and a CA nobody trusts."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-out",
        cert,
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-extensions",
        "v3",
        "-config",
        _config(folder, CA_EXT),
    )
    return cert, key


def _config(folder: Path, extensions: str) -> Path:
    path = folder / "openssl.cnf"
    path.write_text(f"[req]\ndistinguished_name = dn\n[dn]\n[v3]\n{extensions}")
    return path


def _leaf(folder: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    cert, key, csr = folder / f"{name}.crt", folder / f"{name}.key", folder / f"{name}.csr"
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-out",
        csr,
        "-subj",
        f"/CN={name}",
    )
    ext = folder / f"{name}.ext"
    ext.write_text(LEAF_EXT + extensions)
    _openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca[0],
        "-CAkey",
        ca[1],
        "-CAcreateserial",
        "-out",
        cert,
        "-days",
        "2",
        "-extfile",
        ext,
    )
    return cert, key


def make_certificates(folder: Path) -> Certificates:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make the TLS tests' certificates")
    ca = _ca(folder, "rsmq-test-ca")
    server = _leaf(
        folder, "server", ca, "extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1\n"
    )
    client = _leaf(folder, "client", ca, "extendedKeyUsage = clientAuth\n")
    other, _ = _ca(folder, "untrusted-ca")
    return Certificates(ca[0], *server, *client, other)


class TlsRedisServer(RedisServer):
    """A private redis-server with its plain port off: every client must speak TLS."""

    def __init__(self, certs: Certificates, *, client_certificates: bool = False) -> None:
        super().__init__()
        self.certs = certs
        self.client_certificates = client_certificates

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    @property
    def options(self) -> ConnectionOptions:
        """Options that verify this server and show it a client certificate."""
        return ConnectionOptions(
            tls_ca_file=str(self.certs.ca),
            tls_cert_file=str(self.certs.client_cert),
            tls_key_file=str(self.certs.client_key),
        )

    def listen_args(self) -> list[str]:
        return [
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(self.certs.server_cert),
            "--tls-key-file",
            str(self.certs.server_key),
            "--tls-ca-cert-file",
            str(self.certs.ca),
            "--tls-auth-clients",
            "yes" if self.client_certificates else "no",
        ]

    def client(self, **kwargs: Any) -> redis.Redis:
        return sync_client(self.url, self.options, cluster=False, **kwargs)

    def start(self) -> None:
        try:
            super().start()
        except RuntimeError as exc:
            if "tls" in str(exc).lower() and "not supported" in str(exc).lower():
                pytest.skip(f"this redis-server was built without TLS: {exc}")
            raise


def user_url(server: TlsRedisServer, user: str, password: str) -> str:
    return server.url.replace("rediss://", f"rediss://{user}:{password}@")
