"""Linux video devices: the nodes sysfs lists, the one rule that tells a loopback node, and every V4L2 ioctl.

`video_nodes` reads /sys/class/video4linux (no device is opened). `is_loopback` is the one rule for a
loopback (software-fed) node such as v4l2loopback's: the camera list leaves those out, the virtual-camera
probe looks for them, `vcam doctor` reports them. `query_driver` asks a node for its driver name
(VIDIOC_QUERYCAP). `query_formats` asks what a camera can deliver (pixel formats, frame sizes, frame rates).

Nothing is captured: the device node is opened non-blocking and only the enumeration ioctls of
linux/videodev2.h are used (VIDIOC_QUERYCAP, VIDIOC_ENUM_FMT, VIDIOC_ENUM_FRAMESIZES,
VIDIOC_ENUM_FRAMEINTERVALS), which a camera streaming to another application still answers. This
is what `v4l2-ctl --list-formats-ext` shows. The kernel ends every enumeration with EINVAL.

`query_formats` takes the ioctl function (default `fcntl.ioctl`) as a parameter: tests answer with packed structs;
tests point `SYSFS_VIDEO4LINUX` at a fake sysfs folder.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: where Linux lists video devices: one folder per /dev/videoN, with `name`, `index` and a `device` link to the
#: hardware behind it
SYSFS_VIDEO4LINUX = Path("/sys/class/video4linux")
#: the driver name v4l2loopback reports in VIDIOC_QUERYCAP
V4L2LOOPBACK_DRIVER = "v4l2 loopback"

# ioctl request numbers (_IOR/_IOWR('V', nr, struct), x86_64/arm64 asm-generic encoding)
VIDIOC_QUERYCAP = 0x80685600  # _IOR('V', 0, struct v4l2_capability), 104 bytes
VIDIOC_ENUM_FMT = 0xC0405602  # _IOWR('V', 2, struct v4l2_fmtdesc), 64 bytes
VIDIOC_ENUM_FRAMESIZES = 0xC02C564A  # _IOWR('V', 74, struct v4l2_frmsizeenum), 44 bytes
VIDIOC_ENUM_FRAMEINTERVALS = 0xC034564B  # _IOWR('V', 75, struct v4l2_frmivalenum), 52 bytes

V4L2_CAP_VIDEO_CAPTURE = 0x00000001
V4L2_CAP_DEVICE_CAPS = 0x80000000  # `device_caps` is valid (then it describes this node, not the whole device)
V4L2_BUF_TYPE_VIDEO_CAPTURE = 1
V4L2_FMT_FLAG_COMPRESSED = 0x0001
V4L2_FMT_FLAG_EMULATED = 0x0002
V4L2_FRMSIZE_TYPE_DISCRETE = 1
V4L2_FRMSIZE_TYPE_CONTINUOUS = 2
V4L2_FRMSIZE_TYPE_STEPWISE = 3
V4L2_FRMIVAL_TYPE_DISCRETE = 1
V4L2_FRMIVAL_TYPE_CONTINUOUS = 2
V4L2_FRMIVAL_TYPE_STEPWISE = 3

# struct v4l2_capability { u8 driver[16]; u8 card[32]; u8 bus_info[32]; u32 version; u32 capabilities;
#                          u32 device_caps; u32 reserved[3]; }
CAPABILITY = struct.Struct("=16s32s32sIII12x")
# struct v4l2_fmtdesc { u32 index; u32 type; u32 flags; u8 description[32]; u32 pixelformat; u32 mbus_code;
#                       u32 reserved[3]; }
FMTDESC = struct.Struct("=III32sII12x")
# struct v4l2_frmsizeenum { u32 index; u32 pixel_format; u32 type; union { discrete {u32 width, height};
#   stepwise {u32 min_width, max_width, step_width, min_height, max_height, step_height} }; u32 reserved[2]; }
FRMSIZEENUM = struct.Struct("=III6I8x")
# struct v4l2_frmivalenum { u32 index; u32 pixel_format; u32 width; u32 height; u32 type;
#   union { struct v4l2_fract discrete; stepwise { v4l2_fract min, max, step } }; u32 reserved[2]; }
# with struct v4l2_fract { u32 numerator; u32 denominator; }
FRMIVALENUM = struct.Struct("=IIIII6I8x")

#: enumerations stop here even if a broken driver never answers EINVAL
MAX_ENTRIES = 256

IoctlFunction = Callable[[int, int, bytearray], Any]


@dataclass(frozen=True)
class FrameSize:
    """One frame size and the frame rates offered at it.

    `fps` lists discrete rates, highest first; a device that gives a range instead sets `fps_range`
    (min, max) and puts the max in `fps`.
    """

    width: int
    height: int
    fps: tuple[float, ...] = ()
    fps_range: tuple[float, float] | None = None


@dataclass(frozen=True)
class SizeRange:
    """A stepwise (or continuous, step 1) range of frame sizes."""

    min_width: int
    max_width: int
    step_width: int
    min_height: int
    max_height: int
    step_height: int


@dataclass(frozen=True)
class CameraFormat:
    """One pixel format of a camera: fourcc ("MJPG", "YUYV"), the driver's description, and its sizes.

    Discrete sizes are listed largest first. For a stepwise/continuous format `size_range` holds the
    range and `sizes` holds the largest size (with its frame rates).
    """

    fourcc: str
    description: str
    sizes: tuple[FrameSize, ...] = ()
    size_range: SizeRange | None = None
    compressed: bool = False
    emulated: bool = False


@dataclass(frozen=True)
class VideoNode:
    """One /dev/videoN as sysfs lists it (nothing opened).

    `driver` is the kernel driver of the hardware behind it ("uvcvideo"; "" for a node without hardware);
    `primary` is False for a second node of the same device (UVC metadata), which carries no picture;
    `loopback` follows `is_loopback`.
    """

    number: int
    path: str
    name: str
    driver: str
    primary: bool
    loopback: bool


def is_loopback(entry: Path) -> bool:
    """The one rule for a loopback node (v4l2loopback, such as this app's own output) from its sysfs folder.

    Such a node has no hardware behind it, so the kernel lists it under /sys/devices/virtual/video4linux;
    v4l2loopback also gives its nodes a `max_openers` attribute. Reading sysfs opens no device.
    """
    return "/devices/virtual/" in entry.resolve().as_posix() or (entry / "max_openers").exists()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _video_node(entry: Path) -> VideoNode:
    name = _read_text(entry / "name") or entry.name
    driver_link = entry / "device" / "driver"
    driver = driver_link.resolve().name if driver_link.exists() else ""
    return VideoNode(
        number=int(entry.name[len("video") :]),
        path=f"/dev/{entry.name}",
        name=name,
        driver=driver,
        primary=_read_text(entry / "index") in ("", "0"),
        loopback=is_loopback(entry),
    )


def video_nodes(sysfs: Path | None = None) -> list[VideoNode]:
    """Every /dev/videoN that `sysfs` (default `SYSFS_VIDEO4LINUX`) lists, by number; [] without that folder."""
    folder = SYSFS_VIDEO4LINUX if sysfs is None else sysfs
    if not folder.is_dir():
        return []
    entries = sorted(
        (entry for entry in folder.glob("video*") if entry.name[len("video") :].isdigit()),
        key=lambda entry: int(entry.name[len("video") :]),
    )
    return [_video_node(entry) for entry in entries]


def fourcc_text(code: int) -> str:
    """A V4L2 pixel format code as its four characters ("MJPG"), trailing spaces stripped."""
    text = "".join(chr((code >> (8 * k)) & 0xFF) for k in range(4))
    return text.rstrip(" \0") if text.rstrip(" \0").isprintable() else f"0x{code:08x}"


def _c_string(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _fps(numerator: int, denominator: int) -> float:
    """Frames per second from a frame interval in seconds (numerator / denominator)."""
    if numerator == 0:
        return 0.0
    return round(denominator / numerator, 3)


def _enumerate(
    fd: int, ioctl: IoctlFunction, request: int, layout: struct.Struct, fields: tuple[int, ...]
) -> list[tuple[Any, ...]]:
    """Call `request` with index 0, 1, ... until EINVAL; each reply unpacked by `layout`.

    `fields` are the u32 inputs that follow the index (buffer type; pixel format; width, height).
    """
    replies = []
    head = struct.Struct("=" + "I" * (1 + len(fields)))  # every request starts with u32 index, then u32 inputs
    for index in range(MAX_ENTRIES):
        buffer = bytearray(layout.size)
        head.pack_into(buffer, 0, index, *fields)
        try:
            ioctl(fd, request, buffer)
        except OSError as error:
            if error.errno == errno.EINVAL:
                break
            raise
        replies.append(layout.unpack(buffer))
    return replies


def _frame_rates(fd: int, ioctl: IoctlFunction, pixelformat: int, width: int, height: int) -> FrameSize:
    replies = _enumerate(fd, ioctl, VIDIOC_ENUM_FRAMEINTERVALS, FRMIVALENUM, (pixelformat, width, height))
    rates: list[float] = []
    fps_range: tuple[float, float] | None = None
    for reply in replies:
        kind = reply[4]
        if kind == V4L2_FRMIVAL_TYPE_DISCRETE:
            rate = _fps(reply[5], reply[6])
            if rate > 0 and rate not in rates:
                rates.append(rate)
        elif kind in (V4L2_FRMIVAL_TYPE_CONTINUOUS, V4L2_FRMIVAL_TYPE_STEPWISE):
            # the shortest interval (min) is the highest rate
            slowest, fastest = _fps(reply[7], reply[8]), _fps(reply[5], reply[6])
            fps_range = (slowest, fastest)
            rates = [fastest]
            break  # a range is the only entry the kernel returns
    return FrameSize(width=width, height=height, fps=tuple(sorted(rates, reverse=True)), fps_range=fps_range)


def _format(fd: int, ioctl: IoctlFunction, fmtdesc: tuple[Any, ...]) -> CameraFormat:
    _, _, flags, description, pixelformat, _ = fmtdesc
    replies = _enumerate(fd, ioctl, VIDIOC_ENUM_FRAMESIZES, FRMSIZEENUM, (pixelformat,))
    sizes: list[FrameSize] = []
    size_range: SizeRange | None = None
    for reply in replies:
        kind = reply[2]
        if kind == V4L2_FRMSIZE_TYPE_DISCRETE:
            sizes.append(_frame_rates(fd, ioctl, pixelformat, reply[3], reply[4]))
        elif kind in (V4L2_FRMSIZE_TYPE_CONTINUOUS, V4L2_FRMSIZE_TYPE_STEPWISE):
            min_w, max_w, step_w, min_h, max_h, step_h = reply[3:9]
            size_range = SizeRange(min_w, max_w, step_w, min_h, max_h, step_h)
            sizes = [_frame_rates(fd, ioctl, pixelformat, max_w, max_h)]
            break  # a range is the only entry the kernel returns
    sizes.sort(key=lambda size: (size.width * size.height, size.width), reverse=True)
    return CameraFormat(
        fourcc=fourcc_text(pixelformat),
        description=_c_string(description),
        sizes=tuple(sizes),
        size_range=size_range,
        compressed=bool(flags & V4L2_FMT_FLAG_COMPRESSED),
        emulated=bool(flags & V4L2_FMT_FLAG_EMULATED),
    )


def _capability(fd: int, ioctl: IoctlFunction) -> tuple[Any, ...]:
    """VIDIOC_QUERYCAP: (driver, card, bus_info, version, capabilities, device_caps)."""
    buffer = bytearray(CAPABILITY.size)
    ioctl(fd, VIDIOC_QUERYCAP, buffer)
    return CAPABILITY.unpack(buffer)


def _can_capture(fd: int, ioctl: IoctlFunction) -> bool:
    _, _, _, _, capabilities, device_caps = _capability(fd, ioctl)
    caps = device_caps if capabilities & V4L2_CAP_DEVICE_CAPS else capabilities
    return bool(caps & V4L2_CAP_VIDEO_CAPTURE)


def _open_device(path: str) -> int:
    """Open without blocking (and without starting a capture); read-only where read-write is not allowed."""
    try:
        return os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except PermissionError:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK)


def query_driver(path: str, ioctl: IoctlFunction | None = None) -> str | None:
    """The driver name the node at `path` reports (VIDIOC_QUERYCAP), or None when it cannot be opened or asked."""
    if ioctl is None:
        import fcntl  # POSIX only; this runs on Linux

        ioctl = fcntl.ioctl
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        driver = _capability(fd, ioctl)[0]
    except OSError:
        return None
    finally:
        os.close(fd)
    return _c_string(driver)


def query_formats(path: str, ioctl: IoctlFunction | None = None) -> list[CameraFormat]:
    """The capture formats of the V4L2 device at `path`; empty for a node that cannot capture
    (metadata node, loopback output). Raises OSError when the device cannot be opened or refuses.

    `ioctl` defaults to `fcntl.ioctl` (imported here: fcntl does not exist on Windows).
    """
    if ioctl is None:
        import fcntl

        ioctl = fcntl.ioctl
    fd = _open_device(path)
    try:
        if not _can_capture(fd, ioctl):
            logger.debug("%s: no VIDEO_CAPTURE capability, no formats", path)
            return []
        fmtdescs = _enumerate(fd, ioctl, VIDIOC_ENUM_FMT, FMTDESC, (V4L2_BUF_TYPE_VIDEO_CAPTURE,))
        return [_format(fd, ioctl, fmtdesc) for fmtdesc in fmtdescs]
    finally:
        os.close(fd)


def try_query_formats(path: str, ioctl: IoctlFunction | None = None) -> list[CameraFormat]:
    """`query_formats`, but a device that is missing, not permitted or refusing gives [] (logged at debug)."""
    try:
        return query_formats(path, ioctl)
    except OSError as error:
        logger.debug("%s: could not list formats: %s", path, error)
        return []


def _fps_text(fps: float) -> str:
    return f"{fps:g}"


def format_summary(camera_format: CameraFormat) -> str:
    """One line: "MJPG 1920x1080@30,1280x720@60" (each size with its highest rate), or a size range."""
    if camera_format.size_range is not None:
        r = camera_format.size_range
        steps = f" step {r.step_width}x{r.step_height}" if (r.step_width, r.step_height) != (1, 1) else ""
        rate = (
            f"@{_fps_text(camera_format.sizes[0].fps[0])}"
            if camera_format.sizes and camera_format.sizes[0].fps
            else ""
        )
        sizes = f"{r.min_width}x{r.min_height}-{r.max_width}x{r.max_height}{steps}{rate}"
    else:
        sizes = ",".join(
            f"{size.width}x{size.height}" + (f"@{_fps_text(size.fps[0])}" if size.fps else "")
            for size in camera_format.sizes
        )
    return f"{camera_format.fourcc} {sizes}".rstrip()
