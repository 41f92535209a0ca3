"""Benchmark of the server's engine (`vcam serve` without the network): 1, 2, 4 clients on the tiny model,
one stacked UNet call per tick (batched) versus one call per client. Reports aggregate output fps and the
median time a tick takes (what each client waits for its frame's step), after the warmup. Runs on the CPU.

`--cycles N` measures something else: a real `vcam serve` process and N client processes, each killed
(SIGKILL) mid-stream (`vcam.bench.serve_cycles`); the server's resident memory after each cycle and how long
it took to drop each killed client. `--restarts N` restarts a real server N times under a connected client
(`RemoteTranslator`): how long from the server being back to styled frames again.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ticks", type=int, default=40, help="timed ticks per run, after the warmup (default 40)")
    parser.add_argument("--clients", default="1,2,4", help="client counts (default 1,2,4)")
    parser.add_argument("--size", default="128x72", help="client frame size (default 128x72)")
    parser.add_argument(
        "--cycles", type=int, default=0, help="instead: N connect/kill cycles of client processes (server memory)"
    )
    parser.add_argument(
        "--idle-timeout", type=float, default=2.0, help="with --cycles: the server's --idle-timeout (default 2)"
    )
    parser.add_argument(
        "--restarts", type=int, default=0, help="instead: restart the server N times under a connected client"
    )
    parser.add_argument("--down", type=float, default=3.0, help="with --restarts: seconds down each time (3)")


def _one_run(clients: int, batch: bool, ticks: int, width: int, height: int) -> dict[str, float]:
    import numpy as np

    from vcam.config import Config
    from vcam.serve.engine import Engine, StyleFactory

    engine = Engine(StyleFactory(Config()), max_clients=clients, batch=batch)
    outputs = [0]
    streams = [
        engine.add(f"client-{i}", "tiny-random", lambda frame: outputs.__setitem__(0, outputs[0] + 1))
        for i in range(clients)
    ]
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8) for _ in range(8)]
    pts = 0

    def tick() -> float:
        nonlocal pts
        for number, stream in enumerate(streams):
            stream.push(frames[(pts // 3000 + number) % len(frames)], pts)
        pts += 3000
        start = time.perf_counter()
        engine.tick()
        return time.perf_counter() - start

    for _ in range(12):  # warmup (8 frames) and the stream batch filling
        tick()
    outputs[0] = 0
    started = time.perf_counter()
    times = [tick() for _ in range(ticks)]
    elapsed = time.perf_counter() - started
    for stream in streams:
        engine.remove(stream.client_id)
    return {
        "aggregate_fps": round(outputs[0] / elapsed, 2),
        "tick_ms_median": round(statistics.median(times) * 1000, 2),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.cycles > 0:
        return run_cycles(args.cycles, args.idle_timeout)
    if args.restarts > 0:
        return run_restarts(args.restarts, args.down)
    import torch

    width, height = (int(part) for part in args.size.lower().split("x"))
    results: list[dict[str, Any]] = []
    for clients in [int(count) for count in args.clients.split(",")]:
        for batch in (True, False):
            figures = _one_run(clients, batch, args.ticks, width, height)
            results.append({"clients": clients, "batched": batch, **figures})
    return {
        "benchmark": "serve engine, tiny-random model",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}",
        "ticks": args.ticks,
        "size": args.size,
        "results": results,
    }


class _ServerProcess:
    """`vcam serve --style tiny-random` on a free loopback port with a random token, in a temporary home."""

    def __init__(self, *extra: str, port: int = 0) -> None:
        import secrets
        import socket
        import tempfile

        if port == 0:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
        self.port = port
        self.token = secrets.token_urlsafe(24)
        self.url = f"http://127.0.0.1:{port}"
        self._home = tempfile.TemporaryDirectory(prefix="vcam-bench-serve-")
        self.extra = extra
        self.process: Any = None

    def start(self) -> None:
        import subprocess
        import sys
        import urllib.error

        from vcam.bench.serve_cycles import server_status

        command = [sys.executable, "-m", "vcam", "serve", "--port", str(self.port), "--token", self.token]
        self.process = subprocess.Popen(
            [*command, "--style", "tiny-random", *self.extra],
            env={**os.environ, "VCAM_HOME": self._home.name, "OMP_NUM_THREADS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                server_status(self.url, self.token)
                return
            except (urllib.error.URLError, OSError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("vcam serve did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)
            self.process = None

    def close(self) -> None:
        self.stop()
        self._home.cleanup()


def run_cycles(cycles: int, idle_timeout: float) -> dict[str, Any]:
    from vcam.bench.serve_cycles import connect_kill_cycles

    server = _ServerProcess("--max-clients", "1", "--idle-timeout", str(idle_timeout))
    try:
        server.start()
        started = time.perf_counter()
        figures = connect_kill_cycles(server.url, server.token, server.process.pid, cycles, idle_timeout + 60)
        elapsed = time.perf_counter() - started
    finally:
        server.close()
    first, last = figures.rss_kib[0], figures.rss_kib[-1]
    return {
        "benchmark": "serve: client processes killed mid-stream, tiny-random model",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "cycles": cycles,
        "idle_timeout_s": idle_timeout,
        "seconds": round(elapsed, 1),
        "rss_mib_after_first": round(first / 1024, 1),
        "rss_mib_after_last": round(last / 1024, 1),
        "rss_growth_percent": round(100 * (last - first) / first, 2),
        "rss_mib_per_cycle": [round(kib / 1024, 1) for kib in figures.rss_kib],
        "drop_s_median": round(statistics.median(figures.drop_s), 2),
        "drop_s_max": round(max(figures.drop_s), 2),
    }


def run_restarts(restarts: int, down_s: float) -> dict[str, Any]:
    """One `vcam run --remote` connection (RemoteTranslator at 30 fps) while the server restarts `restarts`
    times, down `down_s` each time: seconds from the server being back to styled frames again."""
    import numpy as np

    from vcam.translators.remote import RemoteTranslator

    server = _ServerProcess()
    server.start()
    translator = RemoteTranslator(server.url, server.token, "tiny-random")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(90, 160, 3), dtype=np.uint8)
    calls = [0]

    def drive_until(condition: Any, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError("the remote client did not get there in time")
            translator(np.ascontiguousarray(np.roll(base, 2 * calls[0], axis=1)))
            calls[0] += 1
            time.sleep(1 / 30)

    back_s: list[float] = []
    try:
        drive_until(lambda: translator.connection.connects >= 1)
        for restart in range(restarts):
            server.stop()
            drive_until(lambda: not translator.connection.connected)
            stopped = time.monotonic()
            drive_until(lambda stopped=stopped: time.monotonic() - stopped > down_s)
            server.start()
            up = time.monotonic()
            drive_until(lambda restart=restart: translator.connection.connects >= restart + 2)
            back_s.append(time.monotonic() - up)
    finally:
        translator.close()
        server.close()
    return {
        "benchmark": "serve: a remote client across server restarts, tiny-random model",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "restarts": restarts,
        "down_s": down_s,
        "back_to_styled_s": [round(value, 2) for value in back_s],
        "back_to_styled_s_median": round(statistics.median(back_s), 2),
    }
