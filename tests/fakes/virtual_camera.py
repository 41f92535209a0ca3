"""A fake pyvirtualcam backend: a virtual camera that records what it is sent.

This machine has no v4l2loopback, so the publishing path is tested through a backend of our own,
registered with `pyvirtualcam.register_backend`. pyvirtualcam calls it exactly like its native
backends: `__init__(*, width, height, fps, fourcc, device, **kw)`, then `send(flat uint8 array)`,
then `close()` once.

Use:
    backend = register_fake_backend()           # registers "fake", returns the class
    sink = VirtualCameraSink(backend="fake")     # or parse_sink("vcam", ...): tries every backend
    ...
    camera = backend.last()                      # the newest FakeVirtualCamera instance
    camera.timestamps, camera.last_rgb()
    unregister_fake_backend()

or as a context manager: `with fake_backend() as backend: ...`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

#: pixel formats the fake accepts (pyvirtualcam PixelFormat names)
FAKE_FORMATS = ("RGB", "I420", "UYVY", "YUYV")


def _decode_fourcc(code: int) -> str:
    return "".join(chr((code >> shift) & 0xFF) for shift in (0, 8, 16, 24))


def _encode_fourcc(text: str) -> int:
    return sum(ord(char) << shift for char, shift in zip(text, (0, 8, 16, 24), strict=True))


class FakeVirtualCamera:
    """One fake camera device; the class attributes are set by `register_fake_backend`."""

    native_format: ClassVar[str] = "RGB"  # what `native_fourcc()` reports
    keep_frames: ClassVar[int] = 1  # how many frames' pixels to keep (timestamps are all kept)
    fail_with: ClassVar[str | None] = None  # when set, __init__ raises RuntimeError(fail_with)
    device_name: ClassVar[str] = "Fake Camera"
    instances: ClassVar[list[FakeVirtualCamera]] = []

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw: Any) -> None:
        if self.fail_with is not None:
            raise RuntimeError(self.fail_with)
        if device is not None and device != self.device_name:
            raise RuntimeError(f"no fake device named {device!r} (the fake is {self.device_name!r})")
        pixel_format = {"raw ": "RGB", "I420": "I420", "UYVY": "UYVY", "YUY2": "YUYV"}.get(_decode_fourcc(fourcc))
        if pixel_format is None:
            raise RuntimeError(f"fake backend: unsupported fourcc {_decode_fourcc(fourcc)!r}")
        self.width = width
        self.height = height
        self.fps = fps
        self.pixel_format = pixel_format
        self.extra = dict(kw)
        self.timestamps: list[float] = []
        self.frames: deque[np.ndarray] = deque(maxlen=max(1, self.keep_frames))
        self.closed = False
        self.close_calls = 0
        self._lock = threading.Lock()
        type(self).instances.append(self)

    # the pyvirtualcam backend contract
    def send(self, frame: np.ndarray) -> None:
        if self.closed:
            raise RuntimeError("fake backend: send() after close()")
        if frame.ndim != 1 or frame.dtype != np.uint8:
            raise RuntimeError(f"fake backend: expected a flat uint8 array, got {frame.shape} {frame.dtype}")
        with self._lock:
            self.timestamps.append(time.monotonic())
            self.frames.append(frame.copy())

    def close(self) -> None:
        self.close_calls += 1
        self.closed = True

    def device(self) -> str:
        return self.device_name

    def native_fourcc(self) -> int | None:
        return _encode_fourcc({"RGB": "raw ", "I420": "I420", "UYVY": "UYVY", "YUYV": "YUY2"}[self.native_format])

    # reading back what was sent
    @property
    def frames_received(self) -> int:
        return len(self.timestamps)

    def last_rgb(self) -> np.ndarray:
        """The newest frame, decoded back to HxWx3 uint8 RGB."""
        with self._lock:
            if not self.frames:
                raise RuntimeError("fake backend: no frame was sent")
            frame = self.frames[-1]
        return decode_to_rgb(frame, self.pixel_format, self.width, self.height)

    @classmethod
    def last(cls) -> FakeVirtualCamera:
        """The newest camera this backend made."""
        if not cls.instances:
            raise RuntimeError("fake backend: no camera was opened")
        return cls.instances[-1]


def decode_to_rgb(frame: np.ndarray, pixel_format: str, width: int, height: int) -> np.ndarray:
    """A flat frame in `pixel_format` back to HxWx3 uint8 RGB."""
    import cv2

    if pixel_format == "RGB":
        return frame.reshape(height, width, 3)
    if pixel_format == "I420":
        return cv2.cvtColor(frame.reshape(height * 3 // 2, width), cv2.COLOR_YUV2RGB_I420)
    if pixel_format == "UYVY":
        return cv2.cvtColor(frame.reshape(height, width, 2), cv2.COLOR_YUV2RGB_UYVY)
    if pixel_format == "YUYV":
        return cv2.cvtColor(frame.reshape(height, width, 2), cv2.COLOR_YUV2RGB_YUY2)
    raise ValueError(f"unknown pixel format {pixel_format!r}; known: {FAKE_FORMATS}")


def register_fake_backend(
    name: str = "fake",
    native_format: str = "RGB",
    keep_frames: int = 1,
    fail_with: str | None = None,
    device_name: str = "Fake Camera",
) -> type[FakeVirtualCamera]:
    """Register a fresh fake backend class under `name` (replacing one of that name) and return it."""
    import pyvirtualcam

    if native_format not in FAKE_FORMATS:
        raise ValueError(f"native_format must be one of {FAKE_FORMATS}, got {native_format!r}")
    backend = type(
        "FakeVirtualCamera_" + name,
        (FakeVirtualCamera,),
        {
            "native_format": native_format,
            "keep_frames": keep_frames,
            "fail_with": fail_with,
            "device_name": device_name,
            "instances": [],
        },
    )
    pyvirtualcam.register_backend(name, backend)
    return backend


def unregister_fake_backend(name: str = "fake") -> None:
    """Remove the backend registered under `name` (pyvirtualcam has no public way to do this)."""
    from pyvirtualcam import camera as pyvirtualcam_camera

    pyvirtualcam_camera.BACKENDS.pop(name, None)


@contextmanager
def fake_backend(name: str = "fake", **options: Any) -> Iterator[type[FakeVirtualCamera]]:
    """Register a fake backend for the duration of a `with` block (or a pytest fixture's yield)."""
    backend = register_fake_backend(name, **options)
    try:
        yield backend
    finally:
        unregister_fake_backend(name)
