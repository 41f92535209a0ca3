"""Fake cameras for tests: a `cv2.VideoCapture`-like class over a set of fake devices, and a fake sysfs.

`FakeCameraWorld.factory` has the signature of `vcam.devices.cameras.create_capture` (target, api):
pass it as `capture_factory=` or monkeypatch `create_capture` with it. Devices can be unplugged
(`plugged = False`) or taken by another app (`busy = True`) at any time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

# BGR values every fake frame carries (row 0 encodes the frame counter in its first pixel's blue byte)
FAKE_BLUE, FAKE_GREEN, FAKE_RED = 10, 20, 30


def fourcc_code(text: str) -> int:
    return int(cv2.VideoWriter.fourcc(*text))


@dataclass
class FakeCamera:
    """A device with the modes it supports: (width, height, fps, fourcc)."""

    modes: list[tuple[int, int, float, str]] = field(default_factory=lambda: [(640, 480, 30.0, "YUYV")])
    plugged: bool = True
    busy: bool = False
    frames_sent: int = 0
    #: seconds between the driver filling a buffer and `read()` returning it; None: no driver timestamps
    #: (CAP_PROP_POS_MSEC reads 0, as on backends without them); else V4L2's CLOCK_MONOTONIC milliseconds
    buffer_age_s: float | None = None
    last_buffer_time: float = 0.0


class FakeCameraWorld:
    """Fake devices by index; records every capture it made."""

    def __init__(self, cameras: dict[int, FakeCamera]) -> None:
        self.cameras = cameras
        self.captures: list[FakeVideoCapture] = []

    def factory(self, target: int | str, api: int) -> FakeVideoCapture:
        capture = FakeVideoCapture(self, target, api)
        self.captures.append(capture)
        return capture


class FakeVideoCapture:
    """Behaves like `cv2.VideoCapture` for one fake device: mode negotiation, BGR frames, unplugging."""

    def __init__(self, world: FakeCameraWorld, target: int | str, api: int) -> None:
        self.target = target
        self.api = api
        index = target if isinstance(target, int) else int(str(target).removeprefix("/dev/video") or -1)
        self.camera = world.cameras.get(index)
        self._open = self.camera is not None and self.camera.plugged and not self.camera.busy
        self.requested: dict[int, float] = {}
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return self._open

    def set(self, prop_id: int, value: float) -> bool:
        if not self._open:
            return False
        self.requested[prop_id] = float(value)
        return True

    def _mode(self) -> tuple[int, int, float, str]:
        """The supported mode closest to what was asked (fourcc first, then size, then fps)."""
        assert self.camera is not None
        want_w = self.requested.get(cv2.CAP_PROP_FRAME_WIDTH, 640.0)
        want_h = self.requested.get(cv2.CAP_PROP_FRAME_HEIGHT, 480.0)
        want_fps = self.requested.get(cv2.CAP_PROP_FPS, 30.0)
        want_fourcc = self.requested.get(cv2.CAP_PROP_FOURCC)
        modes = self.camera.modes
        if want_fourcc is not None:
            same = [mode for mode in modes if fourcc_code(mode[3]) == int(want_fourcc)]
            modes = same or modes
        else:
            first_fourcc = modes[0][3]
            modes = [mode for mode in modes if mode[3] == first_fourcc]
        return min(modes, key=lambda mode: (abs(mode[0] * mode[1] - want_w * want_h), abs(mode[2] - want_fps)))

    def get(self, prop_id: int) -> float:
        if not self._open:
            return 0.0
        width, height, fps, fourcc = self._mode()
        values = {
            cv2.CAP_PROP_FRAME_WIDTH: float(width),
            cv2.CAP_PROP_FRAME_HEIGHT: float(height),
            cv2.CAP_PROP_FPS: fps,
            cv2.CAP_PROP_FOURCC: float(fourcc_code(fourcc)),
        }
        if self.camera is not None and self.camera.buffer_age_s is not None:
            values[cv2.CAP_PROP_POS_MSEC] = self.camera.last_buffer_time * 1000
        return values.get(prop_id, 0.0)

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self._open or self.camera is None or not self.camera.plugged:
            return False, None
        width, height, _, _ = self._mode()
        image = np.empty((height, width, 3), dtype=np.uint8)  # [h, w, 3] BGR
        image[:] = (FAKE_BLUE, FAKE_GREEN, FAKE_RED)
        image[0, 0, 0] = self.camera.frames_sent % 256
        self.camera.frames_sent += 1
        if self.camera.buffer_age_s is not None:
            self.camera.last_buffer_time = time.monotonic() - self.camera.buffer_age_s
        return True, image

    def release(self) -> None:
        self._open = False
        self.released = True


@dataclass(frozen=True)
class FakeSysfsDevice:
    """One /sys/class/video4linux/videoN entry: `loopback` puts it under devices/virtual like v4l2loopback."""

    number: int
    name: str
    node_index: int = 0
    loopback: bool = False


def make_fake_sysfs(root: Path, devices: list[FakeSysfsDevice]) -> Path:
    """Build a sysfs-like tree under `root`; returns the folder to use as SYSFS_VIDEO4LINUX."""
    class_dir = root / "class" / "video4linux"
    class_dir.mkdir(parents=True, exist_ok=True)
    uvc_driver = root / "bus" / "usb" / "drivers" / "uvcvideo"
    uvc_driver.mkdir(parents=True, exist_ok=True)
    for device in devices:
        if device.loopback:
            node = root / "devices" / "virtual" / "video4linux" / f"video{device.number}"
            node.mkdir(parents=True)
        else:
            interface = root / "devices" / "pci0000:00" / "usb1" / f"1-{device.number}:1.0"
            node = interface / "video4linux" / f"video{device.number}"
            node.mkdir(parents=True)
            if not (interface / "driver").exists():
                os.symlink(uvc_driver, interface / "driver")
            os.symlink(interface, node / "device")
        (node / "name").write_text(device.name + "\n", encoding="utf-8")
        (node / "index").write_text(f"{device.node_index}\n", encoding="utf-8")
        os.symlink(node, class_dir / f"video{device.number}")
    return class_dir
