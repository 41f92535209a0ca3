"""Benchmark of the server's engine (`vcam serve` without the network): 1, 2, 4 clients on the tiny model,
one stacked UNet call per tick (batched) versus one call per client. Reports aggregate output fps and the
median time a tick takes (what each client waits for its frame's step), after the warmup. Runs on the CPU.
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
