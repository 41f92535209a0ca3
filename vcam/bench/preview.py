"""The preview streams as players see them: the frame rate ffprobe reports and how far behind live a player
that paces by timestamps settles, for `/stream.ts` (H.264 in MPEG-TS) and `/stream.mjpg` (MJPEG).

A sender thread feeds a `PreviewSink` demo frames at the target rate; each frame carries its number as a row of
black and white blocks, so the client knows which frame it shows. The client (PyAV, i.e. ffmpeg, as in OBS's
Media Source) decodes the stream and shows each frame at its timestamp (the first one at once); behind-live is
the time it shows a frame minus the time that frame was sent to the sink. Figures: medians over the second
half of the run (once the player has settled).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import threading
import time
from datetime import date
from typing import Any

import numpy as np

BITS = 16
BLOCK = 16  # pixels per bit block


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default="1280x720", help="frame size (default 1280x720)")
    parser.add_argument("--fps", type=float, default=30.0, help="the camera rate (default 30)")
    parser.add_argument("--seconds", type=float, default=12.0, help="seconds each player runs (default 12)")


def stamp(image: np.ndarray, number: int) -> np.ndarray:
    """Write `number` into the top-left corner as BITS black/white blocks."""
    out = image.copy()
    for bit in range(BITS):
        value = 255 if number >> bit & 1 else 0
        out[:BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = value
    return out


def read_stamp(image: np.ndarray) -> int:
    blocks = image[2 : BLOCK - 2, : BITS * BLOCK].reshape(BLOCK - 4, BITS, BLOCK, 3)  # [rows, bits, cols, 3]
    return sum(1 << bit for bit, level in enumerate(blocks.mean(axis=(0, 2, 3))) if level > 128)


class Sender:
    """Sends stamped demo frames to a sink at `fps`, remembering when each number was sent."""

    def __init__(self, sink: Any, width: int, height: int, fps: float) -> None:
        from vcam.sources.demo import render_demo_frame

        self.sink, self.fps = sink, fps
        self.frames = [render_demo_frame(index, width, height) for index in range(int(fps))]
        self.sent_at: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sender", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = time.monotonic()
        number = 0
        while not self._stop.is_set():
            number += 1
            image = stamp(self.frames[number % len(self.frames)], number % (1 << BITS))
            self.sent_at[number % (1 << BITS)] = time.monotonic()
            self.sink.send(image)
            delay = start + number / self.fps - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def probe_rate(url: str) -> dict[str, str]:
    """r_frame_rate and avg_frame_rate as ffprobe reports them for a live stream URL."""
    if shutil.which("ffprobe") is None:
        return {"error": "ffprobe not installed"}
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,r_frame_rate,avg_frame_rate",
        ]
        + ["-of", "json", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    streams = json.loads(out.stdout or "{}").get("streams", [{}])
    return {key: str(value) for key, value in streams[0].items()}


#: ffmpeg input options of a low-delay player (as OBS's Media Source with network buffering at 0)
LOW_DELAY_OPTIONS = {"fflags": "nobuffer", "flags": "low_delay", "probesize": "32768", "analyzeduration": "0"}


def paced_player(url: str, sent_at: dict[int, float], seconds: float, options: dict[str, str]) -> dict[str, Any]:
    """Play `url` pacing by timestamps for `seconds` with ffmpeg input `options`: behind-live figures in ms."""
    import av

    behind: list[tuple[float, float]] = []  # (time since start, ms behind live)
    start = time.monotonic()
    with av.open(url, timeout=10, options=options) as container:
        stream = container.streams.video[0]
        first: tuple[float, float] | None = None  # (pts in seconds, wall time)
        for frame in container.decode(stream):
            if frame.pts is None or frame.time_base is None:
                continue
            pts = float(frame.pts * frame.time_base)
            now = time.monotonic()
            if first is None:
                first = (pts, now)
            show_at = first[1] + (pts - first[0])
            if show_at > now:
                time.sleep(show_at - now)
            shown = max(now, show_at)
            number = read_stamp(frame.to_ndarray(format="rgb24"))
            if number in sent_at:
                behind.append((shown - start, (shown - sent_at[number]) * 1000))
            if shown - start > seconds:
                break
    settled = [ms for at, ms in behind if at > seconds / 2]
    return {
        "frames_shown": len(behind),
        "behind_live_ms_median_settled": round(statistics.median(settled), 1) if settled else None,
        "behind_live_ms_at_end": round(behind[-1][1], 1) if behind else None,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from vcam.sinks.preview import PreviewSink

    width, height = (int(part) for part in args.size.lower().split("x"))
    sink = PreviewSink(port=0)
    sink.open(width, height, args.fps)
    sender = Sender(sink, width, height, args.fps)
    results: dict[str, Any] = {}
    try:
        for name in ("stream.ts", "stream.mjpg"):
            url = f"{sink.url}{name}"
            results[name] = {
                "ffprobe": probe_rate(url),
                "player_defaults": paced_player(url, sender.sent_at, args.seconds, {}),
                "player_low_delay": paced_player(url, sender.sent_at, args.seconds, LOW_DELAY_OPTIONS),
            }
        status = sink.status_dict()["preview"]
        results["frames_sent"] = sink.frames_received
        results["ts_frames_encoded"] = status["ts_frames_encoded"]
    finally:
        sender.stop()
        sink.close()
    return {
        "benchmark": "preview streams: ffprobe frame rate, behind-live of a player pacing by timestamps (PyAV)",
        "size": args.size,
        "fps": args.fps,
        "seconds": args.seconds,
        **results,
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "date": date.today().isoformat(),
    }
