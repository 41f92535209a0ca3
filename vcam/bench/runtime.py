"""Benchmark of the frame loop itself: demo source -> passthrough -> null sink at 1280x720, 30 fps.

Reports the process CPU time per output frame, the part of it the demo source spends rendering
(measured alone, in the same run), the loop's own share (the difference), and output fps / target
fps. Medians over repeated runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one run (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="runs; figures are medians (default 3)")
    parser.add_argument("--size", default="1280x720", help="frame size (default 1280x720)")
    parser.add_argument("--fps", type=float, default=30.0, help="target output fps (default 30)")


def _one_run(width: int, height: int, fps: float, seconds: float) -> dict[str, float]:
    import numpy as np

    from vcam.runtime import Runtime
    from vcam.sinks.null import NullSink
    from vcam.sources.demo import DemoSource

    send_times: list[float] = []

    class TimingSink(NullSink):
        def send(self, image: np.ndarray) -> None:
            send_times.append(time.monotonic())
            super().send(image)

    frames = max(2, round(seconds * fps))
    runtime = Runtime(DemoSource(width, height, fps), [TimingSink()], width=width, height=height, fps=fps)
    cpu_start = time.process_time()
    runtime.start(max_frames=frames)
    runtime.wait(frames=frames, timeout=seconds * 3 + 10)
    cpu = time.process_time() - cpu_start
    status = runtime.status()
    runtime.stop()
    return {
        "cpu_ms_per_frame": cpu / status.frames_out * 1000,
        "fps_ratio": ((len(send_times) - 1) / (send_times[-1] - send_times[0])) / fps,
        "latency_ms_p50": status.latency_ms_p50,
        "repeated": float(status.repeated),
        "dropped": float(status.dropped),
    }


def _source_cpu_ms(width: int, height: int, frames: int = 60) -> float:
    from vcam.sources.demo import render_demo_frame

    start = time.process_time()
    for index in range(frames):
        render_demo_frame(index, width, height, 0)
    return (time.process_time() - start) / frames * 1000


def run(args: argparse.Namespace) -> dict[str, Any]:
    from vcam.commands.common import parse_size

    width, height = parse_size(args.size)
    runs = [_one_run(width, height, args.fps, args.seconds) for _ in range(args.repeats)]
    source_ms = statistics.median(_source_cpu_ms(width, height) for _ in range(args.repeats))
    median = {key: round(statistics.median(run[key] for run in runs), 3) for key in runs[0]}
    return {
        "benchmark": "runtime",
        "size": f"{width}x{height}",
        "target_fps": args.fps,
        "repeats": args.repeats,
        "seconds_per_run": args.seconds,
        "cpu_ms_per_frame_total": median["cpu_ms_per_frame"],
        "cpu_ms_per_frame_demo_source": round(source_ms, 3),
        "cpu_ms_per_frame_loop": round(median["cpu_ms_per_frame"] - source_ms, 3),
        "output_fps_over_target": median["fps_ratio"],
        "latency_ms_p50": median["latency_ms_p50"],
        "repeated_frames": median["repeated"],
        "dropped_frames": median["dropped"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}",
    }
