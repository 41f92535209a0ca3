"""The null sink: accepts and counts frames (benchmarks, tests, a headless dry run)."""

from __future__ import annotations

import time

import numpy as np

from vcam.errors import SinkError
from vcam.sinks.base import Sink


class NullSink(Sink):
    """Discards frames; counts them and remembers when the last one came."""

    description = "null"

    def __init__(self) -> None:
        self.frames = 0
        self.size: tuple[int, int] = (0, 0)
        self.fps = 0.0
        self.opened = False
        self.closed = False
        self.last_send_time: float | None = None  # time.monotonic() of the newest send

    def open(self, width: int, height: int, fps: float) -> None:
        self.size = (width, height)
        self.fps = fps
        self.opened = True

    def send(self, image: np.ndarray) -> None:
        if not self.opened:
            raise SinkError("the null sink is not open: call open() before send()")
        width, height = self.size
        if image.shape != (height, width, 3) or image.dtype != np.uint8:
            raise ValueError(f"unexpected frame: {image.shape} {image.dtype} != {(height, width, 3)} uint8")
        self.frames += 1
        self.last_send_time = time.monotonic()

    def close(self) -> None:
        self.closed = True
