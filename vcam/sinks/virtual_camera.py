"""The virtual camera sink: frames go to a system camera device through pyvirtualcam.

Video-call apps (Zoom, Teams, Meet, OBS) see the device as a webcam: "Live2Diff Camera" on Linux
(a v4l2loopback device), "OBS Virtual Camera" on Windows and macOS. Frames are sent as they are,
never mirrored; the pixel format is the one the backend uses natively where OpenCV can produce it
cheaply (I420 for v4l2loopback and OBS), so the backend does no conversion of its own.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from vcam.errors import SinkError
from vcam.sinks.base import Sink

logger = logging.getLogger(__name__)

#: backends that pyvirtualcam itself registers, per OS
BUILTIN_BACKENDS = ("v4l2loopback", "obs", "unitycapture")

#: the pixel format to send to each built-in backend (I420: the backend's native format or one cheap step from it;
#: v4l2loopback writes I420, OBS converts I420 to NV12 on Windows and to UYVY on macOS)
PREFERRED_FORMATS = {"v4l2loopback": "I420", "obs": "I420", "unitycapture": "RGB"}

#: formats this sink can produce from RGB with OpenCV (pyvirtualcam PixelFormat names -> cv2 conversion code name)
CONVERTIBLE_FORMATS = {"I420": "COLOR_RGB2YUV_I420", "UYVY": "COLOR_RGB2YUV_UYVY", "YUYV": "COLOR_RGB2YUV_YUY2"}

SYSFS_VIDEO4LINUX = Path("/sys/class/video4linux")

# VIDIOC_QUERYCAP = _IOR('V', 0, struct v4l2_capability) with sizeof(struct v4l2_capability) == 104
VIDIOC_QUERYCAP = (2 << 30) | (104 << 16) | (ord("V") << 8) | 0

# registry keys the OBS and Unity Capture DirectShow filters create on Windows (pyvirtualcam looks for the same ones)
OBS_WINDOWS_CLSID = r"CLSID\{A3FCE0F5-3493-419F-958A-ABA1250EC20B}"
UNITY_CAPTURE_CLSID_PREFIX = r"CLSID\{5C2CD55C-92AD-4999-8666-912BD3E700"


def virtual_camera_fix(system: str | None = None) -> str:
    """How to install a virtual camera driver on `system` (a `sys.platform` value; default: this machine)."""
    system = sys.platform if system is None else system
    if system.startswith("linux"):
        return (
            "Install the v4l2loopback virtual camera: run `sudo installers/linux/setup-virtual-camera.sh` "
            "(it installs v4l2loopback and creates a 'Live2Diff Camera' device)."
        )
    if system == "win32":
        return (
            "Install OBS Studio (https://obsproject.com) and click 'Start Virtual Camera' in it once, "
            "or run `installers/windows/install.ps1`."
        )
    if system == "darwin":
        return (
            "Install OBS Studio 30 or newer (https://obsproject.com), click 'Start Virtual Camera' once and allow "
            "its camera extension in System Settings (General > Login Items & Extensions), "
            "or run `installers/macos/install.sh`."
        )
    return f"No virtual camera driver is known for this operating system ({system}); use `--sink preview` instead."


def _no_camera_message(reasons: str) -> str:
    return (
        f"no virtual camera available: {reasons}\n{virtual_camera_fix()}\n"
        "Or use the preview stream instead: `--sink preview` (OBS can show it as a Browser Source)."
    )


def _query_v4l2_driver(device: Path) -> str | None:
    """The driver name the V4L2 device reports (VIDIOC_QUERYCAP), or None when it cannot be opened."""
    import fcntl  # POSIX only; this runs on Linux

    buffer = bytearray(104)
    try:
        with open(device, "rb", buffering=0) as handle:
            fcntl.ioctl(handle.fileno(), VIDIOC_QUERYCAP, buffer)
    except OSError:
        return None
    return bytes(buffer[:16]).split(b"\0", 1)[0].decode("ascii", "replace")


def list_v4l2loopback_devices(sysfs: Path = SYSFS_VIDEO4LINUX) -> list[dict[str, Any]]:
    """The v4l2loopback devices on Linux: one dict per device with `device` (/dev/videoN) and `name` (its label)."""
    devices: list[dict[str, Any]] = []
    if not sysfs.is_dir():
        return devices
    entries = sorted(sysfs.glob("video*"), key=lambda path: int(path.name[5:]) if path.name[5:].isdigit() else 1 << 30)
    for entry in entries:
        try:
            name = (entry / "name").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            continue
        device = Path("/dev") / entry.name
        # v4l2loopback exposes `max_openers` in sysfs; the ioctl confirms it where the device can be opened
        driver = _query_v4l2_driver(device)
        is_loopback = driver == "v4l2 loopback" if driver is not None else (entry / "max_openers").exists()
        if not is_loopback:
            continue
        readable = driver is not None
        devices.append(
            {
                "device": str(device),
                "name": name,
                "detail": "v4l2loopback" if readable else "v4l2loopback (cannot open it: is your user in 'video'?)",
            }
        )
    return devices


def _windows_registry_has(key_path: str) -> bool:
    if sys.platform != "win32":
        return False
    import winreg

    try:
        with winreg.OpenKey(winreg.HKEY_CLASSES_ROOT, key_path):
            return True
    except OSError:
        return False


def _windows_unity_capture_names() -> list[str]:
    if sys.platform != "win32":
        return []
    import winreg

    names: list[str] = []
    for index in range(8):
        suffix = 0x10 + index + (1 if index else 0)
        try:
            value = winreg.QueryValue(winreg.HKEY_CLASSES_ROOT, f"{UNITY_CAPTURE_CLSID_PREFIX}{suffix:02X}}}")
        except OSError:
            continue
        names.append(value.strip())
    return names


def _try_open_backend(backend: str) -> str | None:
    """Open and close a small camera on `backend`; None when that worked, else why not."""
    import pyvirtualcam

    try:
        camera = pyvirtualcam.Camera(640, 480, 30, backend=backend, print_fps=False)
    except Exception as error:  # pyvirtualcam raises RuntimeError with each backend's reason
        return str(error)
    camera.close()
    return None


def list_virtual_camera_backends() -> list[dict[str, Any]]:
    """Every virtual camera this machine has or could have, for `vcam devices` and `vcam doctor`.

    Each dict has `backend` (pyvirtualcam backend name), `device` (what `--sink vcam:NAME` takes, or None),
    `name` (what apps show), `available` (bool) and `detail` (why not, or the driver).
    """
    from pyvirtualcam import camera as pyvirtualcam_camera

    registered = list(pyvirtualcam_camera.BACKENDS)
    found: list[dict[str, Any]] = []
    if "v4l2loopback" in registered:
        devices = list_v4l2loopback_devices()
        for device in devices:
            found.append(
                {
                    "backend": "v4l2loopback",
                    "device": device["device"],
                    "name": device["name"],
                    "available": True,
                    "detail": device["detail"],
                }
            )
        if not devices:
            found.append(
                {
                    "backend": "v4l2loopback",
                    "device": None,
                    "name": "",
                    "available": False,
                    "detail": "no v4l2loopback device in /sys/class/video4linux (module not loaded?)",
                }
            )
    if "obs" in registered:
        if sys.platform == "win32":
            present = _windows_registry_has(OBS_WINDOWS_CLSID)
            detail = "OBS Virtual Camera is installed" if present else "OBS Virtual Camera is not installed"
        else:
            reason = _try_open_backend("obs")
            present = reason is None
            detail = "OBS Virtual Camera (camera extension)" if present else str(reason).strip()
        found.append(
            {
                "backend": "obs",
                "device": "OBS Virtual Camera",
                "name": "OBS Virtual Camera",
                "available": present,
                "detail": detail,
            }
        )
    if "unitycapture" in registered:
        for name in _windows_unity_capture_names():
            found.append(
                {"backend": "unitycapture", "device": name, "name": name, "available": True, "detail": "Unity Capture"}
            )
    for backend in registered:
        if backend not in BUILTIN_BACKENDS:
            found.append(
                {
                    "backend": backend,
                    "device": None,
                    "name": backend,
                    "available": True,
                    "detail": "a backend registered with pyvirtualcam.register_backend",
                }
            )
    return found


def probe_virtual_camera() -> tuple[bool, str]:
    """Whether a virtual camera driver is present; the text names it, or says why not and how to fix it."""
    backends = list_virtual_camera_backends()
    available = [entry for entry in backends if entry["available"]]
    if available:
        names = ", ".join(f"{entry['backend']}: {entry['device'] or entry['name']}" for entry in available)
        return True, f"virtual camera found ({names})"
    reasons = "; ".join(f"{entry['backend']}: {entry['detail']}" for entry in backends) or "no backend for this OS"
    return False, _no_camera_message(reasons)


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
        devices = list_v4l2loopback_devices()
        for device in devices:
            if device["name"].lower() == self.device.lower():
                return str(device["device"])
        known = ", ".join(f"{d['device']} ({d['name']})" for d in devices) or "none"
        raise SinkError(
            f"no v4l2loopback device named {self.device!r} (devices: {known}). "
            "Give a /dev/videoN path or a label that `vcam devices` lists."
        )

    def _open_backend(self, backend: str, width: int, height: int, fps: float) -> tuple[Any, str]:
        import pyvirtualcam

        device = self._resolve_device(backend)
        if backend == "unitycapture" and device is None:
            # our Windows installer registers Unity Capture under its own name ("Live2Diff Camera")
            device = next(iter(_windows_unity_capture_names()), None)
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
            raise SinkError(_no_camera_message(f"pyvirtualcam has no backend for this OS ({sys.platform})"))
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
        raise SinkError(_no_camera_message(wanted + "; ".join(reasons)))

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
