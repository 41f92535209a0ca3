"""The screen (one monitor) as a source, through mss: BGRA grabs letterboxed into the configured size."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from vcam.errors import SourceError, SourceUnavailable
from vcam.frame import Frame
from vcam.sources.base import Source
from vcam.sources.pacing import FramePacer
from vcam.sources.reconnect import open_failure

logger = logging.getLogger(__name__)


def create_grabber() -> Any:
    """A new mss screen grabber (`mss.MSS()` on mss >= 10.2, `mss.mss()` before)."""
    import mss

    factory = getattr(mss, "MSS", None) or mss.mss
    return factory()


def letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale `image` ([h, w, 3]) to fit inside width x height keeping its aspect; black bars fill the rest."""
    import cv2

    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_w, new_h) == (width, height) and (w, h) == (width, height):
        return np.ascontiguousarray(image)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)  # [new_h, new_w, 3]
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    x0, y0 = (width - new_w) // 2, (height - new_h) // 2
    canvas[y0 : y0 + new_h, x0 : x0 + new_w] = resized
    return canvas


class ScreenSource(Source):
    """Monitor `monitor` (1 = the first; 0 = all monitors together), paced at `fps`, scaled to width x height.

    `grabber_factory` returns an mss-like object (`monitors`, `grab(monitor)`, `close()`); tests pass a fake.
    """

    def __init__(
        self,
        monitor: int = 1,
        width: int = 1280,
        height: int = 720,
        fps: float = 30.0,
        grabber_factory: Callable[[], Any] | None = None,
        realtime: bool = True,
    ) -> None:
        if monitor < 0:
            raise SourceError(f"screen monitor must be >= 0, got {monitor}")
        if width <= 0 or height <= 0:
            raise SourceError(f"screen source size must be positive, got {width}x{height}")
        if not fps > 0:
            raise SourceError(f"screen source fps must be > 0, got {fps}")
        self.monitor = monitor
        self._size = (width, height)
        self._fps = float(fps)
        self.realtime = realtime
        self._factory = grabber_factory or create_grabber
        self._grabber: Any = None
        self._grabber_thread = 0
        self._region: dict[str, int] = {}
        self._index = 0
        self._pacer = FramePacer(self._fps)
        self._opened_before = False
        self.description = f"screen {monitor}"

    def _new_grabber(self) -> Any:
        try:
            return self._factory()
        except Exception as error:  # mss raises platform-specific errors (XError, ScreenShotError, OSError)
            raise open_failure(
                self._opened_before,
                f"cannot capture the screen: no display available ({error}); screen capture needs a desktop "
                'session (on Linux an X11 display: $DISPLAY); use source = "demo" or "webcam" instead',
            ) from error

    def open(self) -> None:
        self.close()
        grabber = self._new_grabber()
        monitors = list(grabber.monitors)
        if self.monitor >= len(monitors):
            grabber.close()
            listing = ", ".join(f"{k}: {m['width']}x{m['height']}" for k, m in enumerate(monitors))
            raise SourceError(
                f"no monitor {self.monitor} (monitors: {listing}; 0 is all of them); "
                f"use screen:1 .. screen:{len(monitors) - 1}"
            )
        region = monitors[self.monitor]
        self._region = {key: int(region[key]) for key in ("left", "top", "width", "height")}
        self._grabber = grabber
        self._grabber_thread = threading.get_ident()
        self._index = 0
        self._pacer.start()
        self._opened_before = True
        self.description = (
            f"screen {self.monitor} ({self._region['width']}x{self._region['height']}) as "
            f"{self._size[0]}x{self._size[1]} @ {self._fps:g} fps"
        )
        logger.info("opened %s", self.description)

    def read(self) -> Frame:
        import cv2

        if self._grabber is None:
            raise RuntimeError("ScreenSource.read() called before open() (or after close())")
        if threading.get_ident() != self._grabber_thread:
            # mss handles belong to the thread that made them (X11 and GDI contexts)
            self._grabber.close()
            self._grabber = self._new_grabber()
            self._grabber_thread = threading.get_ident()
        if self.realtime:
            self._pacer.wait(self._index)
        try:
            shot = self._grabber.grab(self._region)
        except Exception as error:  # the display went away (session locked, X server gone)
            raise SourceUnavailable(f"screen {self.monitor} cannot be captured any more: {error}") from error
        timestamp = time.monotonic()
        bgra = np.asarray(shot, dtype=np.uint8)  # [h, w, 4] BGRA
        rgb = cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGB)  # [h, w, 3]
        image = letterbox(rgb, *self._size)
        frame = Frame(image=image, timestamp=timestamp, index=self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._grabber is not None:
            self._grabber.close()
        self._grabber = None
