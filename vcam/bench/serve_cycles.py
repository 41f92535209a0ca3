"""Clients killed mid-stream: connect a client process, wait for styled frames, SIGKILL it, wait until the
server has dropped it (`GET /status`), read the server's resident memory; repeat.

`python -m vcam.bench.serve_cycles URL TOKEN` is the client that gets killed: the real laptop-side
connection (`RemoteConnection`) sending a synthetic 30 fps camera; it prints "receiving" once
`FRAMES_BEFORE_KILL` frames came back (the stream is warm and mid-flight) and runs until it is killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

#: seconds a client process may take to start, connect and get its first styled frame
CLIENT_READY_TIMEOUT_S = 180.0
#: frames a client receives before it says it is ready to be killed (past the model's 8-frame warmup)
FRAMES_BEFORE_KILL = 12
#: the frame size the killed clients send
CLIENT_SIZE = (160, 90)


@dataclass
class CycleFigures:
    """Per cycle: the server's VmRSS (KiB) once the killed client is dropped, and seconds from kill to drop."""

    rss_kib: list[int] = field(default_factory=list)
    drop_s: list[float] = field(default_factory=list)


def resident_kib(pid: int) -> int:
    """VmRSS of a process, in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS")


def server_status(url: str, token: str) -> dict[str, object]:
    request = urllib.request.Request(url + "/status", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


def _wait_for_line(process: subprocess.Popen[bytes], text: bytes, timeout: float) -> None:
    import select

    if process.stdout is None:
        raise RuntimeError("the client process was started without a stdout pipe")
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or process.poll() is not None:
            raise RuntimeError(f"the client process did not print {text!r} (exit status {process.poll()})")
        if select.select([process.stdout], [], [], remaining)[0] and process.stdout.readline().strip() == text:
            return


def connect_kill_cycles(url: str, token: str, server_pid: int, cycles: int, drop_timeout: float) -> CycleFigures:
    """Run `cycles` connect/kill cycles against the server at `url` (process `server_pid`)."""
    figures = CycleFigures()
    for _ in range(cycles):
        client = subprocess.Popen(
            [sys.executable, "-m", "vcam.bench.serve_cycles", url, token],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        try:
            _wait_for_line(client, b"receiving", CLIENT_READY_TIMEOUT_S)
        finally:
            client.kill()  # SIGKILL mid-stream: no DELETE, no DTLS close, the UDP socket just goes away
            client.wait()
        killed = time.monotonic()
        while server_status(url, token)["clients"] != 0:
            if time.monotonic() - killed > drop_timeout:
                raise RuntimeError(f"the server still holds the killed client after {drop_timeout:g} s")
            time.sleep(0.1)
        figures.drop_s.append(time.monotonic() - killed)
        figures.rss_kib.append(resident_kib(server_pid))
    return figures


def client_main(url: str, token: str) -> None:
    """The client that gets killed (see the module docstring)."""
    import numpy as np

    from vcam.serve.client import RemoteConnection

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    connection = RemoteConnection(url, token, "tiny-random")
    connection.start()
    rng = np.random.default_rng(0)
    width, height = CLIENT_SIZE
    base = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    received = 0
    index = 0
    while True:
        connection.send(np.ascontiguousarray(np.roll(base, 2 * index, axis=1)), index * 3000)
        index += 1
        if connection.take() is not None:
            received += 1
            if received == FRAMES_BEFORE_KILL:
                sys.stdout.write("receiving\n")
                sys.stdout.flush()
        time.sleep(1 / 30)


if __name__ == "__main__":
    client_main(sys.argv[1], sys.argv[2])
