"""The virtual camera sink: frames go to a system camera device through pyvirtualcam.

Video-call apps (Zoom, Teams, Meet, OBS) see the device as a webcam: "Live2Diff Camera" on Linux
(a v4l2loopback device), "OBS Virtual Camera" on Windows and macOS. Frames are sent as they are,
never mirrored; the pixel format is the one the backend uses natively where OpenCV can produce it
cheaply (I420 for v4l2loopback and OBS), so the backend does no conversion of its own. Which virtual
cameras exist, and how to install one, is `vcam.devices.virtual_cameras`.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import numpy as np

from vcam.devices.virtual_cameras import list_loopback_devices, no_virtual_camera_message, windows_unity_capture_names
from vcam.errors import SinkError
from vcam.sinks.base import Sink

logger = logging.getLogger(__name__)

#: the pixel format to send to each built-in backend (I420: the backend's native format or one cheap step from it;
#: v4l2loopback writes I420, OBS converts I420 to NV12 on Windows and to UYVY on macOS)
PREFERRED_FORMATS = {"v4l2loopback": "I420", "obs": "I420", "unitycapture": "RGB"}

#: formats this sink can produce from RGB with OpenCV (pyvirtualcam PixelFormat names -> cv2 conversion code name)
CONVERTIBLE_FORMATS = {"I420": "COLOR_RGB2YUV_I420", "UYVY": "COLOR_RGB2YUV_UYVY", "YUYV": "COLOR_RGB2YUV_YUY2"}


class VirtualCameraSink(Sink):
    """Sends frames to a virtual camera device through pyvirtualcam.

    `device`: a device to use (Linux: `/dev/videoN` or the device's label such as "Live2Diff Camera";
    Windows/macOS: "OBS Virtual Camera" or a Unity Capture name); None takes the first free one.
    `backend`: a pyvirtualcam backend name; None tries each registered backend in turn.
    """

    def __init__(self, device: str | None = None, backend: str | None = None) -> None:
        self.device = device
        self.backend = backend
        self.description = f"virtual camera ({device})" if device else "virtual camera"
        self.pixel_format = "RGB"  # the format sent to pyvirtualcam, chosen at open
        self.frames_sent = 0
        self._camera: Any = None
        self._conversion: int | None = None  # cv2 color conversion code, None for RGB
        self._size: tuple[int, int] = (0, 0)
        self._lock = threading.Lock()

    def _resolve_device(self, backend: str) -> str | None:
        """A Linux device label ("Live2Diff Camera") becomes its /dev/videoN path."""
        if self.device is None or backend != "v4l2loopback" or self.device.startswith("/dev/"):
            return self.device
        devices = list_loopback_devices()
        for device in devices:
            if device.name.lower() == self.device.lower():
                return device.device
        known = ", ".join(f"{d.device} ({d.name})" for d in devices) or "none"
        raise SinkError(
            f"no v4l2loopback device named {self.device!r} (devices: {known}). "
            "Give a /dev/videoN path or a label that `vcam devices` lists."
        )

    def _open_backend(self, backend: str, width: int, height: int, fps: float) -> tuple[Any, str]:
        import pyvirtualcam

        device = self._resolve_device(backend)
        if backend == "unitycapture" and device is None:
            # our Windows installer registers Unity Capture under its own name ("Live2Diff Camera")
            device = next(iter(windows_unity_capture_names()), None)
        even = width % 2 == 0 and height % 2 == 0
        pixel_format = PREFERRED_FORMATS.get(backend, "RGB") if even else "RGB"
        camera = pyvirtualcam.Camera(
            width, height, fps, fmt=pyvirtualcam.PixelFormat[pixel_format], device=device, backend=backend
        )
        if backend in PREFERRED_FORMATS or not even:
            return camera, pixel_format
        # a backend pyvirtualcam does not ship: reopen in its native format when OpenCV can produce it
        native = camera.native_fmt
        if native is not None and native.name in CONVERTIBLE_FORMATS:
            camera.close()
            pixel_format = native.name
            camera = pyvirtualcam.Camera(
                width, height, fps, fmt=pyvirtualcam.PixelFormat[pixel_format], device=device, backend=backend
            )
        return camera, pixel_format

    def open(self, width: int, height: int, fps: float) -> None:
        from pyvirtualcam import camera as pyvirtualcam_camera

        registered = list(pyvirtualcam_camera.BACKENDS)
        if self.backend is not None and self.backend not in registered:
            raise SinkError(
                f"unknown virtual camera backend {self.backend!r}; backends on this machine: {', '.join(registered)}"
            )
        backends = [self.backend] if self.backend is not None else registered
        if not backends:
            raise SinkError(no_virtual_camera_message(f"pyvirtualcam has no backend for this OS ({sys.platform})"))
        reasons: list[str] = []
        for backend in backends:
            try:
                camera, pixel_format = self._open_backend(backend, width, height, fps)
            except SinkError as error:  # a device name this backend does not have
                reasons.append(f"'{backend}' backend: {error}")
                continue
            except Exception as error:  # pyvirtualcam raises RuntimeError("'name' backend: reason") per backend
                reasons.append(str(error).strip())
                continue
            import cv2

            self._camera = camera
            self.pixel_format = pixel_format
            self._conversion = getattr(cv2, CONVERTIBLE_FORMATS[pixel_format]) if pixel_format != "RGB" else None
            self._size = (width, height)
            self.description = f"virtual camera {camera.device} ({camera.backend}, {pixel_format})"
            logger.info("virtual camera %s opened: %dx%d, %g fps, %s", camera.device, width, height, fps, pixel_format)
            return
        wanted = f"device {self.device!r}: " if self.device else ""
        raise SinkError(no_virtual_camera_message(wanted + "; ".join(reasons)))

    def send(self, image: np.ndarray) -> None:
        """Send one HxWx3 uint8 RGB frame of the opened size, as it is (never mirrored)."""
        width, height = self._size
        if image.shape != (height, width, 3) or image.dtype != np.uint8:
            raise ValueError(f"unexpected frame: {image.shape} {image.dtype} != {(height, width, 3)} uint8")
        with self._lock:
            if self._camera is None:
                raise SinkError("virtual camera is not open: call open() before send()")
            if self._conversion is None:
                frame = np.ascontiguousarray(image)
            else:
                import cv2

                frame = cv2.cvtColor(image, self._conversion)  # [h*3/2, w] for I420, [h, w, 2] for UYVY/YUYV
            try:
                self._camera.send(frame)
            except Exception as error:
                raise SinkError(f"virtual camera {self.description} stopped accepting frames: {error}") from error
            self.frames_sent += 1

    def close(self) -> None:
        with self._lock:
            camera, self._camera = self._camera, None
        if camera is not None:
            camera.close()
            logger.info("virtual camera closed after %d frames", self.frames_sent)
