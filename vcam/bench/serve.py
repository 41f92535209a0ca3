"""Benchmark of the server's engine (`vcam serve` without the network): 1, 2, 4 clients on the tiny model,
one stacked UNet call per tick (batched) versus one call per client. Reports aggregate output fps and the
median time a tick takes (what each client waits for its frame's step), after the warmup. Runs on the CPU.

`--cycles N` measures something else: a real `vcam serve` process and N client processes, each killed
(SIGKILL) mid-stream (`vcam.bench.serve_cycles`); the server's resident memory after each cycle and how long
it took to drop each killed client.
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


def run_cycles(cycles: int, idle_timeout: float) -> dict[str, Any]:
    import secrets
    import socket
    import subprocess
    import sys
    import tempfile
    import urllib.error

    from vcam.bench.serve_cycles import connect_kill_cycles, server_status

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    token = secrets.token_urlsafe(24)
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="vcam-bench-serve-") as home:
        command = [sys.executable, "-m", "vcam", "serve", "--port", str(port), "--token", token]
        command += ["--style", "tiny-random", "--max-clients", "1", "--idle-timeout", str(idle_timeout)]
        server = subprocess.Popen(
            command,
            env={**os.environ, "VCAM_HOME": home, "OMP_NUM_THREADS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    server_status(url, token)
                    break
                except (urllib.error.URLError, OSError):
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("vcam serve did not start") from None
                    time.sleep(0.2)
            started = time.perf_counter()
            figures = connect_kill_cycles(url, token, server.pid, cycles, drop_timeout=idle_timeout + 60)
            elapsed = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(30)
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
