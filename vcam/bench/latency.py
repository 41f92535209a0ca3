"""`vcam bench latency`: the latency the camera adds, from capture to send, with the demo source and a style.

Runs the real frame loop (demo source -> style -> null sink) for `--seconds` once the style is live and warmed
up, reads the status once a second, and prints the medians of those readings: content frame rate, latency
p50/p95 and the stage times (`vcam.latency`), plus the audio delay to set. The result is kept in the user cache
folder, where `vcam doctor` and the tray's About find it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any

#: seconds the style gets to load and warm up before the measurement starts
LOAD_TIMEOUT_S = 300.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--style", default="passthrough", help="style to measure (default passthrough)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the measurement (default 10)")
    parser.add_argument("--size", default="1280x720", help="camera and output size (default 1280x720)")
    parser.add_argument("--fps", type=float, default=30.0, help="camera and output fps (default 30)")
    parser.add_argument("--profile", default=None, help="[style] profile to run at: off, auto or a profile name")
    parser.add_argument("--config", default=None, help="config file (for diffusion styles' weights and device)")


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1) if values else 0.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    from vcam.assemble import build_runtime
    from vcam.commands.common import parse_size
    from vcam.config import load_config, validate
    from vcam.errors import UserError
    from vcam.latency import LATENCY_STAGES, Measurement, audio_delay_hint, audio_delay_ms, now_text, save_measurement
    from vcam.styles import find_style

    width, height = parse_size(args.size)
    config = load_config(args.config)
    config.camera.source, config.output.sinks = "demo", ["null"]
    config.camera.width, config.camera.height = config.output.width, config.output.height = width, height
    config.camera.fps = config.output.fps = args.fps
    config.style.name = args.style
    if args.profile is not None:
        config.style.profile = args.profile
    validate(config)
    find_style(args.style, config)
    runtime = build_runtime(config)
    runtime.start()
    samples = []
    try:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while not (runtime.status().style == args.style and runtime.status().state == "running"):
            if not runtime.running or time.monotonic() > deadline:
                raise UserError(f"style {args.style!r} did not start: {runtime.status().last_error or 'timed out'}")
            time.sleep(0.2)
        time.sleep(3.0)  # the figures' window then holds only this style's frames
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            time.sleep(1.0)
            samples.append(runtime.status())
    finally:
        runtime.stop()
    p50 = _median([s.latency_ms_p50 for s in samples])
    result: dict[str, Any] = {
        "benchmark": "latency",
        "style": args.style,
        "profile": samples[-1].profile_settings or samples[-1].profile,
        "size": f"{width}x{height}",
        "fps": args.fps,
        "seconds": args.seconds,
        "machine": f"{platform.machine()} {platform.processor() or platform.platform()}, {os.cpu_count()} CPUs",
        "date": now_text(),
        "fps_content": _median([s.fps_content for s in samples]),
        "fps_out": _median([s.fps_out for s in samples]),
        "latency_ms_p50": p50,
        "latency_ms_p95": _median([s.latency_ms_p95 for s in samples]),
        "stages_ms": {
            stage: _median([s.latency_stages_ms.get(stage, 0.0) for s in samples]) for stage in LATENCY_STAGES
        },
        "audio_delay_ms": audio_delay_ms(p50, config.output.audio_offset_ms),
    }
    result["audio_delay_hint"] = audio_delay_hint(result["audio_delay_ms"])
    save_measurement(
        Measurement(
            latency_ms_p50=p50,
            latency_ms_p95=result["latency_ms_p95"],
            fps_content=result["fps_content"],
            style=args.style,
            source=f"demo {width}x{height} @ {args.fps:g} fps",
            measured_at=result["date"],
            how=f"vcam bench latency --style {args.style}",
        )
    )
    return result
