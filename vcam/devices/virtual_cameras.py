"""The virtual cameras on this machine: what each pyvirtualcam backend can send to, and how to get one.

Video-call apps see a virtual camera as a webcam: a v4l2loopback device on Linux (found by the one
loopback rule, `v4l2.is_loopback`), "OBS Virtual Camera" on Windows and macOS, Unity Capture devices on
Windows. `vcam devices`, `vcam doctor`, the automatic sink choice and the virtual camera sink read this.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from vcam.devices import v4l2

#: backends that pyvirtualcam itself registers, per OS
BUILTIN_BACKENDS = ("v4l2loopback", "obs", "unitycapture")

# registry keys the OBS and Unity Capture DirectShow filters create on Windows (pyvirtualcam looks for the same ones)
OBS_WINDOWS_CLSID = r"CLSID\{A3FCE0F5-3493-419F-958A-ABA1250EC20B}"
UNITY_CAPTURE_CLSID_PREFIX = r"CLSID\{5C2CD55C-92AD-4999-8666-912BD3E700"


@dataclass(frozen=True)
class LoopbackDevice:
    """A v4l2loopback device: `device` its node (/dev/videoN), `name` its label, `detail` the driver (and whether
    this user can open it)."""

    device: str
    name: str
    detail: str


@dataclass(frozen=True)
class VirtualCamera:
    """A virtual camera this machine has or could have.

    `backend` is the pyvirtualcam backend; `device` what `--sink vcam:NAME` takes (None: none to name);
    `name` what apps show; `available` whether frames can be sent to it now; `detail` why not, or the driver.
    """

    backend: str
    device: str | None
    name: str
    available: bool
    detail: str


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


def no_virtual_camera_message(reasons: str, suggest_preview: bool = True) -> str:
    """Why no virtual camera can be used, with how to install one and (`suggest_preview`: unless the preview
    stream is what runs instead already) the preview stream as the alternative."""
    message = f"no virtual camera available: {reasons}\n{virtual_camera_fix()}"
    if suggest_preview:
        message += "\nOr use the preview stream instead: `--sink preview` (OBS can show it as a Browser Source)."
    return message


def list_loopback_devices(sysfs: Path | None = None) -> list[LoopbackDevice]:
    """The v4l2loopback devices on Linux (the loopback nodes `sysfs`, default /sys/class/video4linux, lists)."""
    devices: list[LoopbackDevice] = []
    for node in v4l2.video_nodes(sysfs):
        if not node.loopback:
            continue
        readable = v4l2.query_driver(node.path) is not None
        detail = "v4l2loopback" if readable else "v4l2loopback (cannot open it: is your user in 'video'?)"
        devices.append(LoopbackDevice(device=node.path, name=node.name, detail=detail))
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


def windows_unity_capture_names() -> list[str]:
    """The Unity Capture devices registered on Windows (our installer registers "Live2Diff Camera"); [] elsewhere."""
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


def list_virtual_camera_backends() -> list[VirtualCamera]:
    """Every virtual camera this machine has or could have, for `vcam devices` and `vcam doctor`."""
    from pyvirtualcam import camera as pyvirtualcam_camera

    registered = list(pyvirtualcam_camera.BACKENDS)
    found: list[VirtualCamera] = []
    if "v4l2loopback" in registered:
        devices = list_loopback_devices()
        for device in devices:
            found.append(VirtualCamera("v4l2loopback", device.device, device.name, True, device.detail))
        if not devices:
            found.append(
                VirtualCamera(
                    "v4l2loopback",
                    None,
                    "",
                    False,
                    "no v4l2loopback device in /sys/class/video4linux (module not loaded?)",
                )
            )
    if "obs" in registered:
        if sys.platform == "win32":
            present = _windows_registry_has(OBS_WINDOWS_CLSID)
            detail = "OBS Virtual Camera is installed" if present else "OBS Virtual Camera is not installed"
        else:
            reason = _try_open_backend("obs")
            present = reason is None
            detail = "OBS Virtual Camera (camera extension)" if present else str(reason).strip()
        found.append(VirtualCamera("obs", "OBS Virtual Camera", "OBS Virtual Camera", present, detail))
    if "unitycapture" in registered:
        for name in windows_unity_capture_names():
            found.append(VirtualCamera("unitycapture", name, name, True, "Unity Capture"))
    for backend in registered:
        if backend not in BUILTIN_BACKENDS:
            found.append(
                VirtualCamera(backend, None, backend, True, "a backend registered with pyvirtualcam.register_backend")
            )
    return found


def probe_virtual_camera(suggest_preview: bool = True) -> tuple[bool, str]:
    """Whether a virtual camera driver is present; the text names it, or says why not and how to fix it (and,
    with `suggest_preview`, that the preview stream works without one)."""
    backends = list_virtual_camera_backends()
    available = [entry for entry in backends if entry.available]
    if available:
        names = ", ".join(f"{entry.backend}: {entry.device or entry.name}" for entry in available)
        return True, f"virtual camera found ({names})"
    reasons = "; ".join(f"{entry.backend}: {entry.detail}" for entry in backends) or "no backend for this OS"
    return False, no_virtual_camera_message(reasons, suggest_preview)
