"""`RemoteTranslator`: a style that runs on a `vcam serve` box; this side sends frames and shows what returns.

Each call sends the camera frame (scaled to at most `SEND_LONG_SIDE` pixels) and returns the newest styled
frame that came back, never waiting for the network. Frames travel with media timestamps, so a returned frame
is known to be the translation of the input of call `c - latency_frames` (the runtime composites it with
that input's mask); `latency_frames` follows the network and the server. While the server cannot be reached
the translator returns the camera image itself (the plain look) and `problem` says "remote style
unavailable: ..."; the connection retries with backoff in the background.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np

from vcam.translators.base import Translator

log = logging.getLogger(__name__)

#: the long side of the frames sent to the server (the model runs at 512 or less)
SEND_LONG_SIDE = 640
#: media clock ticks (90 kHz) between two calls' frames: 30 fps
PTS_STEP = 3000
#: a styled frame more calls late than this is dropped (its input and mask are gone from the delay line)
MAX_LATENCY_FRAMES = 60


def send_size(width: int, height: int, long_side: int = SEND_LONG_SIDE) -> tuple[int, int]:
    """The frame size sent for a camera frame: scaled down to `long_side`, both sides even."""
    scale = min(1.0, long_side / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


class RemoteTranslator(Translator):
    """Style `name` on the server at `url` (see the module docstring)."""

    def __init__(
        self,
        url: str,
        token: str,
        name: str,
        ice_servers: list[str] | None = None,
        ca_file: str | None = None,
    ) -> None:
        from vcam.serve.client import RemoteConnection

        self.name = name
        self.connection = RemoteConnection(url, token, name, ice_servers=ice_servers, ca_file=ca_file)
        self._calls = 0
        self._sent: OrderedDict[int, int] = OrderedDict()  # pts -> call index
        self._latency = 0
        self._styled_once = False
        self.connection.start()

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        import cv2

        call = self._calls
        self._calls += 1
        height, width = image.shape[:2]
        small_width, small_height = send_size(width, height)
        small = (
            image
            if (small_width, small_height) == (width, height)
            else cv2.resize(image, (small_width, small_height), interpolation=cv2.INTER_AREA)
        )
        pts = call * PTS_STEP
        self._sent[pts] = call
        while len(self._sent) > MAX_LATENCY_FRAMES:
            self._sent.popitem(last=False)
        self.connection.send(np.ascontiguousarray(small), pts)
        styled = self.connection.take()
        if not self.connection.connected:
            self._latency = 0
            return image  # the plain look while the remote style is unavailable (or still connecting)
        if styled is None:
            return None
        output, input_pts = styled
        source_call = self._sent.get(input_pts)
        if source_call is None:
            return None  # older than the delay line, or from a previous connection
        self._latency = call - source_call
        self._styled_once = True
        if output.shape[:2] != (height, width):
            output = cv2.resize(output, (width, height), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(output)

    @property
    def latency_frames(self) -> int:
        return self._latency

    @property
    def warming_up(self) -> bool:
        return not self._styled_once

    @property
    def problem(self) -> str | None:
        return self.connection.problem

    def set_prompt(self, prompt: str) -> None:
        self.connection.control({"prompt": prompt})

    def close(self) -> None:
        self.connection.stop()
