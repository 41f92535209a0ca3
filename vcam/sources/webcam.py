"""Webcam input through OpenCV's VideoCapture: device by index, by name (Linux) or the first real camera.

`open()` asks for the configured size and fps (and MJPG above 640x480 on Linux, where raw YUYV
cannot do 720p at 30 fps over USB 2), reads a first frame and reports what the camera really
delivers. `read()` converts BGR to RGB and raises `SourceUnavailable` when the camera goes away;
the runtime's capture thread then reopens it with backoff. By-name and automatic choices are
resolved at every open, so a camera that comes back under another index is found again.

Which cameras exist, and opening one through OpenCV, is `vcam.devices.cameras`. Tests pass
`capture_factory` (a fake VideoCapture) and point `vcam.devices.v4l2.SYSFS_VIDEO4LINUX` at a fake sysfs folder.
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np

from vcam.devices.cameras import CaptureFactory, VideoCaptureLike, capture_apis, create_capture, list_cameras
from vcam.errors import SourceError, SourceUnavailable
from vcam.frame import Frame
from vcam.sources.base import Source
from vcam.sources.reconnect import open_failure

logger = logging.getLogger(__name__)

#: consecutive failed reads after which the camera counts as lost
MAX_FAILED_READS = 5
#: reads tried at open before giving up on a camera that opens but sends nothing
FIRST_FRAME_ATTEMPTS = 10
#: above this many pixels Linux asks for MJPG
MJPG_ABOVE_PIXELS = 640 * 480
#: a driver timestamp older than this (seconds) is not on the monotonic clock: the time of read is used
MAX_DRIVER_TIMESTAMP_AGE_S = 1.0


def capture_time(capture: VideoCaptureLike, read_time: float) -> float:
    """When the frame just read was captured, on `time.monotonic()`'s scale.

    OpenCV's V4L2 backend reports the driver's buffer timestamp as CAP_PROP_POS_MSEC, on CLOCK_MONOTONIC
    (the clock `time.monotonic()` reads on Linux): it is used when it is plausible, i.e. not after the read
    and less than `MAX_DRIVER_TIMESTAMP_AGE_S` before it. Other backends report a stream position or
    nothing there; then the time of the read is the capture time.
    """
    import cv2

    try:
        driver = float(capture.get(cv2.CAP_PROP_POS_MSEC)) / 1000
    except Exception:  # a backend that cannot answer: the time of read
        return read_time
    if 0.0 <= read_time - driver <= MAX_DRIVER_TIMESTAMP_AGE_S:
        return driver
    return read_time


def _fourcc_text(value: float) -> str:
    code = int(value)
    text = "".join(chr((code >> (8 * k)) & 0xFF) for k in range(4))
    return text if text.isprintable() and code else "?"


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR (or gray / BGRA) frame as a new C-contiguous RGB array."""
    import cv2

    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class WebcamSource(Source):
    """A webcam: `device` is an index, a name (Linux: matched against sysfs), a /dev path, or None
    for the first real (non-virtual) camera."""

    def __init__(
        self,
        device: int | str | None,
        width: int,
        height: int,
        fps: float,
        capture_factory: CaptureFactory | None = None,
    ) -> None:
        if isinstance(device, str) and device.strip().isdigit():
            device = int(device.strip())
        if width <= 0 or height <= 0:
            raise SourceError(f"webcam size must be positive, got {width}x{height}")
        if not fps > 0:
            raise SourceError(f"webcam fps must be > 0, got {fps}")
        self.device = device
        self.requested = (width, height, float(fps))
        self._factory = capture_factory
        self._capture: VideoCaptureLike | None = None
        self._pending: np.ndarray | None = None
        self._size = (width, height)
        self._fps = float(fps)
        self._index = 0
        self._failed_reads = 0
        self._opened_before = False
        self.camera_name = ""
        self.description = f"webcam {self._device_label()}"

    def _device_label(self) -> str:
        if self.device is None:
            return "(first camera)"
        return str(self.device) if isinstance(self.device, int) else repr(self.device)

    # 1. which device to open
    def _resolve(self) -> tuple[int | str, str]:
        """(what to pass to VideoCapture, camera name) for `self.device`, raising when none matches."""
        device = self.device
        if isinstance(device, int):
            if device < 0:
                raise SourceError(f"webcam index must be >= 0, got {device}")
            if not sys.platform.startswith("linux"):
                return device, f"camera {device}"  # no names without sysfs; probing would open every camera
            names = {camera.index: camera.name for camera in list_cameras(include_virtual=True, with_formats=False)}
            return device, names.get(device, f"camera {device}")
        if isinstance(device, str) and device.startswith("/dev/"):
            return device, device
        if device is None:
            if not sys.platform.startswith("linux"):
                return 0, "camera 0"
            cameras = list_cameras(include_virtual=True, with_formats=False)
            real = [camera for camera in cameras if not camera.virtual]
            if not real:
                skipped = ", ".join(camera.label for camera in cameras)
                why = f"virtual cameras skipped: {skipped}" if skipped else "no video devices on this machine"
                raise open_failure(
                    self._opened_before,
                    f"no webcam found ({why}); plug one in, "
                    'or use source = "demo" (or "file:PATH") in the [camera] config',
                )
            return real[0].index, real[0].name
        return self._resolve_name(device)

    def _resolve_name(self, name: str) -> tuple[int, str]:
        if not sys.platform.startswith("linux"):
            raise SourceError(
                f"webcam name {name!r}: choosing a camera by name is supported on Linux only; "
                "use its index instead (webcam:0, webcam:1, ...; `vcam devices` lists them)"
            )
        cameras = list_cameras(include_virtual=True, with_formats=False)
        wanted = name.strip().lower()
        exact = [camera for camera in cameras if camera.name.lower() == wanted]
        partial = [camera for camera in cameras if wanted in camera.name.lower()]
        matches = exact or sorted(partial, key=lambda camera: camera.virtual)
        if not matches:
            found = "; ".join(camera.label for camera in cameras) or "no cameras at all"
            raise open_failure(
                self._opened_before,
                f"no webcam named {name!r} (found: {found}); use a name or index from `vcam devices`",
            )
        if len(matches) > 1:
            logger.info("webcam name %r matches %s; using the first", name, [camera.label for camera in matches])
        return matches[0].index, matches[0].name

    def _not_opened_message(self, target: int | str, tried: list[str]) -> str:
        if sys.platform.startswith("linux") and isinstance(target, int):
            cameras = list_cameras(include_virtual=True, with_formats=False)
            if all(camera.index != target for camera in cameras):
                found = "; ".join(camera.label for camera in cameras) or "no video devices on this machine"
                return (
                    f"webcam {target} does not exist (cameras found: {found}); "
                    'pick one from `vcam devices`, or use source = "demo"'
                )
        return (
            f"webcam {target!r} could not be opened (tried {', '.join(tried)}): it does not exist, "
            "or another application is using it; "
            'close other camera apps, pick a camera from `vcam devices`, or use source = "demo"'
        )

    # 2. open and negotiate
    def open(self) -> None:
        import cv2

        self.close()
        target, name = self._resolve()
        factory = self._factory or create_capture
        capture: VideoCaptureLike | None = None
        tried = []
        for api_name, api in capture_apis():
            candidate = factory(target, api)
            if candidate.isOpened():
                capture = candidate
                break
            candidate.release()
            tried.append(api_name)
        if capture is None:
            raise open_failure(self._opened_before, self._not_opened_message(target, tried))

        width, height, fps = self.requested
        if sys.platform.startswith("linux") and width * height > MJPG_ABOVE_PIXELS:
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*"MJPG"))
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        capture.set(cv2.CAP_PROP_FPS, fps)

        first = None
        for _ in range(FIRST_FRAME_ATTEMPTS):
            ok, image = capture.read()
            if ok and image is not None:
                first = image
                break
            time.sleep(0.02)
        if first is None:
            capture.release()
            raise open_failure(
                self._opened_before,
                f"webcam {target!r} ({name}) opened but sent no picture: another application may be using it, "
                "or it is not a capture device; close other camera apps or pick another camera from `vcam devices`",
            )

        got_fps = float(capture.get(cv2.CAP_PROP_FPS))
        fps_known = 0 < got_fps <= 1000
        self._fps = got_fps if fps_known else fps
        self._size = (int(first.shape[1]), int(first.shape[0]))
        fourcc = _fourcc_text(capture.get(cv2.CAP_PROP_FOURCC))
        self._capture = capture
        self._pending = first
        self._index = 0
        self._failed_reads = 0
        self._opened_before = True
        self.camera_name = name
        fps_text = f"{self._fps:g} fps" if fps_known else f"{fps:g} fps (not reported)"
        self.description = f"webcam {target} ({name}) {self._size[0]}x{self._size[1]} @ {fps_text}, {fourcc}"
        asked = f"{width}x{height} @ {fps:g} fps"
        if self._size != (width, height) or (fps_known and abs(self._fps - fps) > 0.5):
            logger.warning("webcam %s: asked for %s, got %s", target, asked, self.description)
        else:
            logger.info("opened %s", self.description)

    # 3. frames
    def read(self) -> Frame:
        if self._capture is None:
            raise RuntimeError("WebcamSource.read() called before open() (or after close())")
        if self._pending is not None:
            image, self._pending = self._pending, None
        else:
            image = None
            while image is None:
                ok, candidate = self._capture.read()
                if ok and candidate is not None:
                    image = candidate
                    self._failed_reads = 0
                    break
                self._failed_reads += 1
                if self._failed_reads >= MAX_FAILED_READS:
                    raise SourceUnavailable(
                        f"webcam {self.device if self.device is not None else ''} ({self.camera_name}) stopped "
                        "sending frames: unplugged or taken by another application"
                    )
                time.sleep(0.01)
        timestamp = capture_time(self._capture, time.monotonic())
        rgb = _to_rgb(np.asarray(image))
        self._size = (int(rgb.shape[1]), int(rgb.shape[0]))
        frame = Frame(image=rgb, timestamp=timestamp, index=self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
        self._capture = None
        self._pending = None
