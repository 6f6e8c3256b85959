"""TLS from certificate files: the SDK connects with the CA, a plaintext client cannot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from client import ZooClient, errors


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_server(served_repository: Path, tmp_path: Path, certificate) -> None:
    from serving import start_server

    cert, key = certificate
    running = start_server(
        served_repository, tmp_path, "--tls-cert", str(cert), "--tls-key", str(key)
    )
    try:
        address = f"localhost:{running.port}"
        with ZooClient(address, tls=cert) as zoo:
            out = zoo.infer("mobilenetv2", np.zeros((1, 64, 64, 3), np.uint8))
            assert out["probabilities"].shape == (1, 1000)
        with ZooClient(address, timeout=3, retries=0) as plain, pytest.raises(errors.Unavailable):
            plain.ready()
        # HTTP speaks TLS from the same files
        https = f"https://localhost:{running.http_port}"
        assert httpx.get(f"{https}/v2/health/ready", verify=str(cert)).status_code == 200
        with pytest.raises(httpx.ConnectError):  # an unknown certificate is refused
            httpx.get(f"{https}/v2/health/ready")
        with pytest.raises(httpx.RemoteProtocolError):  # plaintext gets no answer
            httpx.get(f"http://localhost:{running.http_port}/v2/health/ready")
    finally:
        assert running.stop() == 0
