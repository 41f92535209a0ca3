"""The cameras on this machine, and opening one through OpenCV's VideoCapture.

Linux reads the cameras from sysfs (`v4l2.video_nodes`, loopback nodes marked virtual by the one rule,
`v4l2.is_loopback`) and can ask each for its formats with V4L2 ioctls; elsewhere indices are probed by
opening them. Tests replace `create_capture` (or pass `capture_factory`) with a fake VideoCapture.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from vcam.devices import v4l2

#: indices probed by `list_cameras()` where there is no sysfs (Windows, macOS)
PROBE_INDICES = range(5)


class VideoCaptureLike(Protocol):
    """The part of `cv2.VideoCapture` the webcam source uses."""

    def isOpened(self) -> bool: ...  # noqa: N802 (OpenCV's name)

    def set(self, prop_id: int, value: float) -> bool: ...

    def get(self, prop_id: int) -> float: ...

    def read(self) -> tuple[bool, Any]: ...

    def release(self) -> None: ...


CaptureFactory = Callable[[int | str, int], VideoCaptureLike]


def quiet_opencv() -> None:
    """Keep OpenCV's own warnings ("can't open camera by index") off the console: our errors say what to do."""
    import cv2

    if cv2.utils.logging.getLogLevel() > cv2.utils.logging.LOG_LEVEL_ERROR:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def create_capture(target: int | str, api: int) -> VideoCaptureLike:
    """Open `target` (an index or a device path) with OpenCV backend `api`."""
    import cv2

    quiet_opencv()
    capture: VideoCaptureLike = cv2.VideoCapture(target, api)
    return capture


def capture_apis() -> list[tuple[str, int]]:
    """OpenCV backends to try, best first, for this OS."""
    import cv2

    if sys.platform.startswith("linux"):
        return [("V4L2", cv2.CAP_V4L2)]
    if sys.platform == "win32":
        return [("DSHOW", cv2.CAP_DSHOW), ("MSMF", cv2.CAP_MSMF)]
    if sys.platform == "darwin":
        return [("AVFOUNDATION", cv2.CAP_AVFOUNDATION)]
    return [("ANY", cv2.CAP_ANY)]


@dataclass(frozen=True)
class CameraInfo:
    """A camera found on this machine.

    `index` is what `webcam:N` takes; `path` is the device node on Linux ("" elsewhere); `virtual`
    marks loopback/virtual devices (such as this app's own output), never picked automatically.
    `formats` is what the camera offers (Linux only; empty elsewhere or when the device would not
    say); it describes the camera rather than identifying it, so equality ignores it.
    """

    index: int
    name: str
    path: str = ""
    driver: str = ""
    virtual: bool = False
    formats: tuple[v4l2.CameraFormat, ...] = field(default=(), compare=False)

    @property
    def label(self) -> str:
        extra = " (virtual)" if self.virtual else ""
        where = f" {self.path}" if self.path else ""
        return f"{self.index}: {self.name}{where}{extra}"


def _sysfs_cameras() -> list[CameraInfo]:
    """The picture nodes sysfs lists (secondary metadata nodes left out); loopback nodes marked virtual."""
    return [
        CameraInfo(index=node.number, name=node.name, path=node.path, driver=node.driver, virtual=node.loopback)
        for node in v4l2.video_nodes()
        if node.primary
    ]


def _probe_cameras(factory: CaptureFactory) -> list[CameraInfo]:
    api = capture_apis()[0][1]
    found = []
    for index in PROBE_INDICES:
        capture = factory(index, api)
        try:
            if capture.isOpened():
                found.append(CameraInfo(index=index, name=f"camera {index}"))
        finally:
            capture.release()
    return found


def list_cameras(
    include_virtual: bool = False, capture_factory: CaptureFactory | None = None, with_formats: bool = True
) -> list[CameraInfo]:
    """Cameras on this machine, by index; virtual (loopback) devices only with `include_virtual`.

    Linux reads names from sysfs and, with `with_formats`, asks each device node for its formats
    with V4L2 ioctls (no capture is started, a camera in use still answers); elsewhere indices 0..4
    are probed by opening them (a camera in use by another application may then be missed).
    """
    if sys.platform.startswith("linux"):
        cameras = _sysfs_cameras()
    else:
        cameras = _probe_cameras(capture_factory or create_capture)
    cameras = [camera for camera in cameras if include_virtual or not camera.virtual]
    if with_formats and sys.platform.startswith("linux"):
        cameras = [replace(camera, formats=tuple(v4l2.try_query_formats(camera.path))) for camera in cameras]
    return cameras
