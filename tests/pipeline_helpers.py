"""Shared by the pipeline and translate tests: synthetic moving frames and a short generated clip."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import numpy as np


def moving_frames(count: int, width: int = 64, height: int = 64, seed: int = 0) -> list[np.ndarray]:
    """`count` RGB uint8 frames of a textured pattern drifting right by 2 px per frame (seeded)."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, size=(height, width + 2 * count, 3), dtype=np.uint8)
    ramp = np.linspace(0, 120, width + 2 * count, dtype=np.float32)[None, :, None]
    texture = np.clip(texture.astype(np.float32) * 0.5 + ramp, 0, 255).astype(np.uint8)
    return [np.ascontiguousarray(texture[:, 2 * i : 2 * i + width]) for i in range(count)]


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """Write frames to an mp4 with PyAV (mpeg4 or libx264), one video frame per image."""
    import av

    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream: Any = cast(Any, container.add_stream(codec, rate=Fraction(fps)))
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def count_frames(path: Path) -> int:
    """Decoded video frames in a file."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))
