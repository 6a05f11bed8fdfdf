"""Throw-away certificates for the TLS tests, made with the `openssl` command at test time.

A CA signs a server certificate for 127.0.0.1 (the address the test servers bind) and a client
certificate; a second, unrelated CA signs a client certificate the server must not accept.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "2"
_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_SERVER_EXTENSIONS = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
_CLIENT_EXTENSIONS = "extendedKeyUsage=clientAuth\n"


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes]:
        """(private key, certificate chain) as grpc.ssl_channel_credentials takes them."""
        return self.key.read_bytes(), self.cert.read_bytes()


@dataclass(frozen=True)
class Certificates:
    ca: KeyPair
    server: KeyPair
    client: KeyPair
    other_ca: KeyPair
    other_client: KeyPair  # signed by other_ca: not trusted by the server


def openssl_available() -> bool:
    return shutil.which("openssl") is not None


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _make_ca(out: Path, name: str) -> KeyPair:
    pair = KeyPair(out / f"{name}.pem", out / f"{name}.key")
    _openssl(
        *("req", "-x509", *_EC_KEY, "-keyout", pair.key, "-out", pair.cert, "-days", DAYS),
        *("-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )
    return pair


def _make_leaf(out: Path, name: str, ca: KeyPair, extensions: str) -> KeyPair:
    pair = KeyPair(out / f"{name}.pem", out / f"{name}.key")
    request, extfile = out / f"{name}.csr", out / f"{name}.ext"
    extfile.write_text(extensions)
    _openssl("req", *_EC_KEY, "-keyout", pair.key, "-out", request, "-subj", f"/CN={name}")
    _openssl(
        *("x509", "-req", "-in", request, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial"),
        *("-out", pair.cert, "-days", DAYS, "-extfile", extfile),
    )
    return pair


def make_certificates(out: Path) -> Certificates:
    ca, other_ca = _make_ca(out, "test-ca"), _make_ca(out, "other-ca")
    return Certificates(
        ca=ca,
        server=_make_leaf(out, "server", ca, _SERVER_EXTENSIONS),
        client=_make_leaf(out, "client", ca, _CLIENT_EXTENSIONS),
        other_ca=other_ca,
        other_client=_make_leaf(out, "other-client", other_ca, _CLIENT_EXTENSIONS),
    )
