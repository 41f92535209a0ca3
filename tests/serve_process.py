"""`vcam serve` in another process for the remote-mode tests, and a small HTTP helper."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.waiting import wait_until

TOKEN = "test-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """`vcam serve --style tiny-random` on 127.0.0.1:`port`; up when the constructor returns."""

    def __init__(
        self, home: Path, port: int, extra: tuple[str, ...] = (), scheme: str = "http", ca_file: str | None = None
    ) -> None:
        self.port = port
        self.url = f"{scheme}://127.0.0.1:{port}"
        self.context = ssl.create_default_context(cafile=ca_file) if scheme == "https" else None
        env = {**os.environ, "VCAM_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        self.log = home / f"serve-{port}-{time.monotonic_ns()}.log"
        command = [sys.executable, "-m", "vcam", "serve", "--port", str(port), "--token", TOKEN]
        self.process = subprocess.Popen(
            [*command, "--style", "tiny-random", *extra], env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("w")
        )
        assert wait_until(self._up, timeout=120), self.log.read_text()

    def _up(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        try:
            with urllib.request.urlopen(self.url + "/", timeout=2, context=self.context) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def rss_kib(self) -> int:
        """The server's resident memory (VmRSS, KiB)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc/PID/status")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def post(
    url: str,
    body: bytes,
    token: str | None,
    content_type: str = "application/sdp",
    context: ssl.SSLContext | None = None,
) -> tuple[int, str]:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()
