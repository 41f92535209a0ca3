"""V4L2 format listing: a fake kernel answers the ioctls with structs packed at videodev2.h's offsets."""

from __future__ import annotations

import errno
import json
import logging
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fakes.camera import FakeSysfsDevice, make_fake_sysfs
from vcam.cli import main
from vcam.devices import v4l2 as v4l2_module
from vcam.devices.cameras import CameraInfo, list_cameras
from vcam.devices.v4l2 import CameraFormat, FrameSize, SizeRange, format_summary, query_formats, try_query_formats

# struct sizes on x86_64 / arm64 (linux/videodev2.h)
CAPABILITY_SIZE, FMTDESC_SIZE, FRMSIZEENUM_SIZE, FRMIVALENUM_SIZE = 104, 64, 44, 52
CAP_VIDEO_CAPTURE, CAP_META_CAPTURE, CAP_STREAMING, CAP_DEVICE_CAPS = 0x1, 0x00800000, 0x04000000, 0x80000000
FMT_FLAG_COMPRESSED = 0x1


def ioc(direction: int, number: int, size: int) -> int:
    """_IOC(dir, 'V', nr, size) as asm-generic/ioctl.h encodes it (read = 2, write = 1)."""
    return (direction << 30) | (size << 16) | (ord("V") << 8) | number


QUERYCAP = ioc(2, 0, CAPABILITY_SIZE)
ENUM_FMT = ioc(3, 2, FMTDESC_SIZE)
ENUM_FRAMESIZES = ioc(3, 74, FRMSIZEENUM_SIZE)
ENUM_FRAMEINTERVALS = ioc(3, 75, FRMIVALENUM_SIZE)


def fourcc(text: str) -> int:
    return int.from_bytes(text.encode("ascii"), "little")


@dataclass
class FakeFormat:
    """A pixel format: discrete `sizes` {(w, h): [(numerator, denominator) intervals]} or a stepwise `size_range`."""

    fourcc: str
    description: str
    flags: int = 0
    sizes: dict[tuple[int, int], list[tuple[int, int]]] = field(default_factory=dict)
    size_range: tuple[int, int, int, int, int, int] | None = None  # min_w, max_w, step_w, min_h, max_h, step_h
    interval_range: tuple[int, int, int, int] | None = None  # min (num, den), max (num, den) for continuous rates


@dataclass
class FakeV4L2Device:
    """Answers the four enumeration ioctls like a driver; `refuse` makes every call fail with that errno."""

    formats: list[FakeFormat]
    capabilities: int = CAP_VIDEO_CAPTURE | CAP_STREAMING | CAP_DEVICE_CAPS
    device_caps: int = CAP_VIDEO_CAPTURE | CAP_STREAMING
    refuse: int | None = None
    calls: list[int] = field(default_factory=list)

    def ioctl(self, fd: int, request: int, buffer: bytearray) -> int:
        self.calls.append(request)
        if self.refuse is not None:
            raise OSError(self.refuse, "refused")
        expected_size = {QUERYCAP: 104, ENUM_FMT: 64, ENUM_FRAMESIZES: 44, ENUM_FRAMEINTERVALS: 52}.get(request)
        if expected_size is None:
            raise OSError(errno.ENOTTY, f"unknown ioctl 0x{request:08x}")
        if len(buffer) != expected_size:
            raise OSError(errno.EFAULT, f"buffer of {len(buffer)} bytes for ioctl 0x{request:08x}")
        if request == QUERYCAP:
            self._querycap(buffer)
        elif request == ENUM_FMT:
            self._enum_fmt(buffer)
        elif request == ENUM_FRAMESIZES:
            self._enum_framesizes(buffer)
        else:
            self._enum_frameintervals(buffer)
        return 0

    def _format(self, code: int) -> FakeFormat:
        for candidate in self.formats:
            if fourcc(candidate.fourcc) == code:
                return candidate
        raise OSError(errno.EINVAL, "unknown pixel format")

    def _querycap(self, buffer: bytearray) -> None:
        buffer[:] = bytes(104)
        struct.pack_into("16s", buffer, 0, b"uvcvideo")
        struct.pack_into("32s", buffer, 16, b"Integrated Camera")
        struct.pack_into("32s", buffer, 48, b"usb-0000:00:14.0-1")
        struct.pack_into("=III", buffer, 80, 0x00060800, self.capabilities, self.device_caps)

    def _enum_fmt(self, buffer: bytearray) -> None:
        index, buffer_type = struct.unpack_from("=II", buffer, 0)
        if buffer_type != 1 or index >= len(self.formats):
            raise OSError(errno.EINVAL, "end of formats")
        entry = self.formats[index]
        struct.pack_into("=I", buffer, 8, entry.flags)
        struct.pack_into("32s", buffer, 12, entry.description.encode())
        struct.pack_into("=I", buffer, 44, fourcc(entry.fourcc))

    def _enum_framesizes(self, buffer: bytearray) -> None:
        index, code = struct.unpack_from("=II", buffer, 0)
        entry = self._format(code)
        if entry.size_range is not None:
            if index > 0:
                raise OSError(errno.EINVAL, "end of sizes")
            struct.pack_into("=I6I", buffer, 8, 3, *entry.size_range)  # V4L2_FRMSIZE_TYPE_STEPWISE
            return
        sizes = list(entry.sizes)
        if index >= len(sizes):
            raise OSError(errno.EINVAL, "end of sizes")
        struct.pack_into("=III", buffer, 8, 1, *sizes[index])  # V4L2_FRMSIZE_TYPE_DISCRETE, width, height

    def _enum_frameintervals(self, buffer: bytearray) -> None:
        index, code, width, height = struct.unpack_from("=IIII", buffer, 0)
        entry = self._format(code)
        if entry.interval_range is not None:
            if index > 0:
                raise OSError(errno.EINVAL, "end of intervals")
            fastest, slowest = entry.interval_range[:2], entry.interval_range[2:]
            struct.pack_into("=I6I", buffer, 16, 2, *fastest, *slowest, 1, 1)  # V4L2_FRMIVAL_TYPE_CONTINUOUS
            return
        intervals = entry.sizes.get((width, height))
        if intervals is None:
            raise OSError(errno.EINVAL, f"no size {width}x{height}")
        if index >= len(intervals):
            raise OSError(errno.EINVAL, "end of intervals")
        struct.pack_into("=III", buffer, 16, 1, *intervals[index])  # V4L2_FRMIVAL_TYPE_DISCRETE, numerator, den


def webcam_device() -> FakeV4L2Device:
    return FakeV4L2Device(
        formats=[
            FakeFormat(
                "MJPG",
                "Motion-JPEG",
                flags=FMT_FLAG_COMPRESSED,
                sizes={(1280, 720): [(1, 60), (1, 30)], (1920, 1080): [(1, 30)], (640, 480): [(1001, 30000)]},
            ),
            FakeFormat("YUYV", "YUYV 4:2:2", sizes={(640, 480): [(1, 15), (1, 30)]}),
        ]
    )


@pytest.fixture
def node(tmp_path: Path) -> str:
    """A file that opens like a device node; the fake ioctl does the rest."""
    path = tmp_path / "video0"
    path.write_bytes(b"")
    return str(path)


def test_ioctl_numbers_and_struct_sizes_match_videodev2() -> None:
    assert (v4l2_module.VIDIOC_QUERYCAP, v4l2_module.VIDIOC_ENUM_FMT) == (QUERYCAP, ENUM_FMT)
    assert (v4l2_module.VIDIOC_ENUM_FRAMESIZES, v4l2_module.VIDIOC_ENUM_FRAMEINTERVALS) == (
        ENUM_FRAMESIZES,
        ENUM_FRAMEINTERVALS,
    )
    assert (QUERYCAP, ENUM_FMT, ENUM_FRAMESIZES, ENUM_FRAMEINTERVALS) == (
        0x80685600,
        0xC0405602,
        0xC02C564A,
        0xC034564B,
    )
    sizes = [layout.size for layout in (v4l2_module.CAPABILITY, v4l2_module.FMTDESC)]
    sizes += [layout.size for layout in (v4l2_module.FRMSIZEENUM, v4l2_module.FRMIVALENUM)]
    assert sizes == [CAPABILITY_SIZE, FMTDESC_SIZE, FRMSIZEENUM_SIZE, FRMIVALENUM_SIZE]


def test_discrete_formats_sizes_and_rates(node: str) -> None:
    formats = query_formats(node, webcam_device().ioctl)
    assert formats == [
        CameraFormat(
            fourcc="MJPG",
            description="Motion-JPEG",
            sizes=(
                FrameSize(1920, 1080, (30.0,)),
                FrameSize(1280, 720, (60.0, 30.0)),
                FrameSize(640, 480, (29.97,)),
            ),
            compressed=True,
        ),
        CameraFormat(fourcc="YUYV", description="YUYV 4:2:2", sizes=(FrameSize(640, 480, (30.0, 15.0)),)),
    ]
    assert [format_summary(item) for item in formats] == [
        "MJPG 1920x1080@30,1280x720@60,640x480@29.97",
        "YUYV 640x480@30",
    ]


def test_stepwise_sizes_and_continuous_rates(node: str) -> None:
    device = FakeV4L2Device(
        formats=[
            FakeFormat(
                "YU12",
                "Planar YUV 4:2:0",
                size_range=(16, 1920, 8, 16, 1080, 8),
                interval_range=(1, 60, 1, 1),  # from 1/60 s (60 fps) to 1 s (1 fps)
            )
        ]
    )
    [only] = query_formats(node, device.ioctl)
    assert only.size_range == SizeRange(16, 1920, 8, 16, 1080, 8)
    assert only.sizes == (FrameSize(1920, 1080, (60.0,), fps_range=(1.0, 60.0)),)
    assert format_summary(only) == "YU12 16x16-1920x1080 step 8x8@60"
    assert device.calls.count(ENUM_FRAMESIZES) == 2  # the range, then EINVAL
    assert device.calls.count(ENUM_FRAMEINTERVALS) == 2  # rates asked at the largest size only


def test_every_enumeration_stops_at_einval(node: str) -> None:
    device = webcam_device()
    query_formats(node, device.ioctl)
    assert device.calls.count(QUERYCAP) == 1
    assert device.calls.count(ENUM_FMT) == 3  # 2 formats + the EINVAL
    assert device.calls.count(ENUM_FRAMESIZES) == (3 + 1) + (1 + 1)
    assert device.calls.count(ENUM_FRAMEINTERVALS) == (2 + 1) + (1 + 1) + (1 + 1) + (2 + 1)


def test_node_without_video_capture_has_no_formats(node: str) -> None:
    metadata = webcam_device()
    metadata.device_caps = CAP_META_CAPTURE | CAP_STREAMING  # the device can capture, this node only metadata
    assert query_formats(node, metadata.ioctl) == []
    assert metadata.calls == [QUERYCAP]


@pytest.mark.parametrize("refusal", [errno.EBUSY, errno.ENOTTY, errno.EIO])
def test_refusing_device_gives_no_formats_and_no_exception(
    node: str, refusal: int, caplog: pytest.LogCaptureFixture
) -> None:
    device = webcam_device()
    device.refuse = refusal
    with pytest.raises(OSError) as raised:
        query_formats(node, device.ioctl)
    assert raised.value.errno == refusal
    with caplog.at_level(logging.DEBUG, logger="vcam.devices.v4l2"):
        assert try_query_formats(node, device.ioctl) == []
    assert "could not list formats" in caplog.text


def test_missing_device_gives_no_formats(tmp_path: Path) -> None:
    device = webcam_device()
    assert try_query_formats(str(tmp_path / "video9"), device.ioctl) == []
    assert device.calls == []


# ------------------------------------------------------------------------------------ list_cameras / CLI
@pytest.fixture
def fake_linux(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, FakeV4L2Device]:
    """Linux with a real camera (video0 + metadata node video1) and a loopback video2; the V4L2 answers of
    each /dev node come from a FakeV4L2Device. Returns those devices by path (their `calls` record use)."""
    monkeypatch.setattr(sys, "platform", "linux")
    sysfs = make_fake_sysfs(
        tmp_path / "sys",
        [
            FakeSysfsDevice(0, "Integrated Camera"),
            FakeSysfsDevice(1, "Integrated Camera", node_index=1),
            FakeSysfsDevice(2, "Live2Diff Camera", loopback=True),
        ],
    )
    monkeypatch.setattr(v4l2_module, "SYSFS_VIDEO4LINUX", sysfs)
    loopback = FakeV4L2Device(formats=[], capabilities=0x2 | CAP_DEVICE_CAPS, device_caps=0x2)  # output only
    devices = {"/dev/video0": webcam_device(), "/dev/video2": loopback}
    nodes = tmp_path / "dev"
    nodes.mkdir()
    real_try_query_formats = v4l2_module.try_query_formats

    def try_fake_node(path: str, ioctl: v4l2_module.IoctlFunction | None = None) -> list[CameraFormat]:
        node = nodes / Path(path).name
        node.write_bytes(b"")
        return real_try_query_formats(str(node), devices[path].ioctl)

    monkeypatch.setattr(v4l2_module, "try_query_formats", try_fake_node)
    return devices


def test_list_cameras_fills_formats_on_linux(fake_linux: dict[str, FakeV4L2Device]) -> None:
    [camera] = list_cameras()
    assert [item.fourcc for item in camera.formats] == ["MJPG", "YUYV"]
    assert camera == CameraInfo(index=0, name="Integrated Camera", path="/dev/video0", driver="uvcvideo")
    assert fake_linux["/dev/video2"].calls == []  # not listed, so not asked
    everything = list_cameras(include_virtual=True)
    assert [len(item.formats) for item in everything] == [2, 0]  # the loopback output cannot capture


def test_list_cameras_without_formats_opens_nothing(fake_linux: dict[str, FakeV4L2Device]) -> None:
    cameras = list_cameras(include_virtual=True, with_formats=False)
    assert [camera.formats for camera in cameras] == [(), ()]
    assert all(device.calls == [] for device in fake_linux.values())


def test_list_cameras_elsewhere_has_no_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes.camera import FakeCamera, FakeCameraWorld

    monkeypatch.setattr(sys, "platform", "win32")
    cameras = list_cameras(capture_factory=FakeCameraWorld({0: FakeCamera()}).factory)
    assert [(camera.index, camera.formats) for camera in cameras] == [(0, ())]


def test_devices_json_shows_formats(fake_linux: dict[str, FakeV4L2Device], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    [camera] = report["cameras"]
    assert camera["path"] == "/dev/video0"
    mjpg, yuyv = camera["formats"]
    assert (mjpg["fourcc"], mjpg["description"], mjpg["compressed"]) == ("MJPG", "Motion-JPEG", True)
    assert mjpg["sizes"][1] == {"width": 1280, "height": 720, "fps": [60.0, 30.0], "fps_range": None}
    assert yuyv["sizes"] == [{"width": 640, "height": 480, "fps": [30.0, 15.0], "fps_range": None}]


def test_devices_text_summarises_formats(
    fake_linux: dict[str, FakeV4L2Device], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["devices"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = lines.index("  0: Integrated Camera /dev/video0 [uvcvideo]")
    assert lines[at + 1 : at + 3] == ["    MJPG 1920x1080@30,1280x720@60,640x480@29.97", "    YUYV 640x480@30"]


def test_one_loopback_rule_for_the_camera_list_the_virtual_camera_probe_and_doctor(
    fake_linux: dict[str, FakeV4L2Device], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vcam import doctor
    from vcam.devices.virtual_cameras import list_loopback_devices

    cameras = list_cameras(include_virtual=True, with_formats=False)
    assert [(camera.path, camera.virtual) for camera in cameras] == [("/dev/video0", False), ("/dev/video2", True)]
    assert [(device.device, device.name) for device in list_loopback_devices()] == [
        ("/dev/video2", "Live2Diff Camera")
    ]
    (tmp_path / "sys" / "module" / "v4l2loopback").mkdir(parents=True)
    monkeypatch.setattr(v4l2_module, "SYSFS_VIDEO4LINUX", Path("/sys/class/video4linux"))  # doctor roots it
    check = doctor.check_v4l2loopback(sys_root=tmp_path, secure_boot=lambda: "disabled")
    assert check.ok and check.detail.startswith("v4l2loopback: /dev/video2 'Live2Diff Camera'")
    assert "/dev/video0" not in check.detail and "/dev/video1" not in check.detail
