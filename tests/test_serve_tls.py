"""`vcam serve` beyond loopback: refused without TLS or --insecure; with --cert/--key an https offer works."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.serve_process import TOKEN, ServerProcess, free_port

pytest.importorskip("aiortc")


def run_serve(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vcam", "serve", "--token", TOKEN, *arguments],
        env={"VCAM_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_beyond_loopback_without_tls_or_insecure_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = run_serve(tmp_path, "--host", "0.0.0.0", "--port", str(free_port()))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "--host 0.0.0.0 reaches beyond this machine: give --cert and --key for https, or --insecure" in lines[0]
    done = run_serve(tmp_path, "--cert", str(tmp_path / "cert.pem"))
    assert done.returncode == 2 and "--cert and --key go together" in done.stderr
    assert "Traceback" not in done.stderr


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its IP address as subjectAltName) and its key, PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vcam test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_an_https_offer_works_end_to_end_with_a_self_signed_certificate(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    from vcam.translators.remote import RemoteTranslator

    cert, key = self_signed(tmp_path)
    server = ServerProcess(
        tmp_path, free_port(), extra=("--cert", str(cert), "--key", str(key)), scheme="https", ca_file=str(cert)
    )
    untrusting = RemoteTranslator(server.url, TOKEN, "tiny-random")  # the system's CAs: the handshake fails
    trusting = RemoteTranslator(server.url, TOKEN, "tiny-random", ca_file=str(cert))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(90, 160, 3), dtype=np.uint8)
    try:
        styled = 0
        deadline = time.monotonic() + 120
        call = 0
        while styled < 5 and time.monotonic() < deadline:
            frame = np.ascontiguousarray(np.roll(base, 2 * call, axis=1))
            call += 1
            output = trusting(frame)
            untrusting(frame)
            if output is not None and output is not frame and not trusting.warming_up:
                styled += 1
            time.sleep(1 / 30)
        assert styled == 5
        assert untrusting.problem is not None and "CERTIFICATE_VERIFY_FAILED" in untrusting.problem
    finally:
        trusting.close()
        untrusting.close()
        server.stop()
