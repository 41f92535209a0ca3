"""Frame sources: demo scene, webcam (through a fake VideoCapture and a fake sysfs), video file, screen, specs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fakes.camera import (
    FAKE_BLUE,
    FAKE_GREEN,
    FAKE_RED,
    FakeCamera,
    FakeCameraWorld,
    FakeSysfsDevice,
    fourcc_code,
    make_fake_sysfs,
)
from tests.fakes.clock import ManualClock
from vcam.devices import v4l2 as v4l2_module
from vcam.devices.cameras import CameraInfo, list_cameras
from vcam.errors import SourceError, SourceUnavailable
from vcam.sources import parse_source
from vcam.sources.demo import DemoSource, demo_person_mask, person_box, render_demo_frame
from vcam.sources.reconnect import Backoff, open_failure
from vcam.sources.screen import ScreenSource, letterbox
from vcam.sources.video_file import EndOfVideo, VideoFileSource
from vcam.sources.webcam import WebcamSource

# ---------------------------------------------------------------- reconnect


def test_backoff_doubles_up_to_ten_seconds_and_resets() -> None:
    backoff = Backoff()
    assert [backoff.next_delay() for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert backoff.attempts == 7
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_backoff_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="initial"):
        Backoff(initial=0.0)
    with pytest.raises(ValueError, match="maximum"):
        Backoff(initial=5.0, maximum=1.0)


def test_open_failure_is_user_error_first_then_unavailable() -> None:
    first = open_failure(False, "gone")
    later = open_failure(True, "gone")
    assert type(first) is SourceError and str(first) == "gone"
    assert type(later) is SourceUnavailable


# ---------------------------------------------------------------- demo


def test_demo_frames_are_a_pure_function_of_index_seed_and_size() -> None:
    a = render_demo_frame(7, 320, 240, seed=1)
    b = render_demo_frame(7, 320, 240, seed=1)
    assert a.shape == (240, 320, 3) and a.dtype == np.uint8 and a.flags.c_contiguous
    np.testing.assert_array_equal(a, b)
    assert a is not b
    assert not np.array_equal(a, render_demo_frame(7, 320, 240, seed=2))
    assert not np.array_equal(a, render_demo_frame(8, 320, 240, seed=1))
    assert render_demo_frame(0, 200, 100, seed=1).shape == (100, 200, 3)


def test_demo_source_reproduces_render_demo_frame() -> None:
    source = DemoSource(160, 120, fps=30, seed=3, realtime=False)
    source.open()
    frames = [source.read() for _ in range(5)]
    source.close()
    assert source.size == (160, 120) and source.fps == 30.0
    assert [frame.index for frame in frames] == [0, 1, 2, 3, 4]
    for frame in frames:
        np.testing.assert_array_equal(frame.image, render_demo_frame(frame.index, 160, 120, seed=3, fps=30))
    assert all(later.timestamp >= earlier.timestamp for earlier, later in zip(frames, frames[1:], strict=False))
    with pytest.raises(RuntimeError, match="before open"):
        source.read()


def test_demo_source_paces_in_real_time() -> None:
    clock = ManualClock(auto_advance=True)
    source = DemoSource(64, 48, fps=50, clock=clock)
    source.open()
    start = clock.now()
    stamps = [source.read().timestamp - start for _ in range(11)]
    assert stamps == pytest.approx([index / 50 for index in range(11)], abs=1e-9)


def test_demo_source_does_not_burst_after_falling_behind() -> None:
    clock = ManualClock(auto_advance=True)
    source = DemoSource(64, 48, fps=50, clock=clock)
    source.open()
    source.read()
    clock.advance(0.25)  # a slow reader: about 12 frames late
    late = source.read().timestamp
    after = source.read().timestamp
    assert after - late == pytest.approx(1 / 50, abs=1e-9)


def test_demo_rejects_bad_settings() -> None:
    with pytest.raises(SourceError, match="too small"):
        DemoSource(8, 8, fps=30)
    with pytest.raises(SourceError, match="fps"):
        DemoSource(320, 240, fps=0)


def test_demo_mask_covers_the_figure_and_moves_with_it() -> None:
    width, height = 320, 240
    i, j = 0, 75  # 2.5 s apart: the figure has moved
    mask_i = demo_person_mask(i, width, height, seed=0)
    mask_j = demo_person_mask(j, width, height, seed=0)
    assert mask_i.shape == (height, width) and mask_i.dtype == bool
    assert 0.08 < mask_i.mean() < 0.4
    x0, y0, x1, y1 = person_box(i, width, height)
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert y1 == height  # the torso reaches the bottom edge, like a person in front of a webcam
    assert 0.25 * width < (x0 + x1) / 2 < 0.75 * width
    assert person_box(j, width, height) != (x0, y0, x1, y1)
    frame_i = render_demo_frame(i, width, height).astype(int)
    frame_j = render_demo_frame(j, width, height).astype(int)
    outside = ~(mask_i | mask_j)
    changed_outside = np.abs(frame_i - frame_j).sum(axis=2)[outside] > 0
    assert changed_outside.mean() < 0.03  # only the ball moves in the background
    uncovered = mask_i & ~mask_j  # figure in frame i, background in frame j
    assert uncovered.sum() > 100
    assert (np.abs(frame_i - frame_j).sum(axis=2)[uncovered] > 30).mean() > 0.9


def test_demo_motion_is_smooth() -> None:
    boxes = np.array([person_box(index, 320, 240) for index in range(0, 60)])
    steps = np.abs(np.diff(boxes[:, [0, 2]], axis=0))
    assert steps.max() <= 0.02 * 320


# ---------------------------------------------------------------- webcam


@pytest.fixture
def linux_sysfs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Pretend to be Linux with one real camera (video0 + its metadata node video1) and our loopback video2."""
    monkeypatch.setattr(sys, "platform", "linux")
    sysfs = make_fake_sysfs(
        tmp_path / "sys",
        [
            FakeSysfsDevice(0, "Integrated Camera: Integrated C"),
            FakeSysfsDevice(1, "Integrated Camera: Integrated C", node_index=1),
            FakeSysfsDevice(2, "Live2Diff Camera", loopback=True),
        ],
    )
    monkeypatch.setattr(v4l2_module, "SYSFS_VIDEO4LINUX", sysfs)
    return sysfs


def test_list_cameras_reads_sysfs_and_skips_loopback_and_metadata(linux_sysfs: Path) -> None:
    assert list_cameras() == [
        CameraInfo(index=0, name="Integrated Camera: Integrated C", path="/dev/video0", driver="uvcvideo")
    ]
    everything = list_cameras(include_virtual=True)
    assert [(camera.index, camera.virtual) for camera in everything] == [(0, False), (2, True)]
    assert "(virtual)" in everything[1].label


def test_list_cameras_probes_indices_without_sysfs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    world = FakeCameraWorld({0: FakeCamera(), 2: FakeCamera()})
    cameras = list_cameras(capture_factory=world.factory)
    assert [camera.index for camera in cameras] == [0, 2]
    assert all(capture.released for capture in world.captures)


def test_webcam_negotiates_mjpg_720p_and_converts_bgr_to_rgb(linux_sysfs: Path) -> None:
    import cv2

    modes = [(640, 480, 30.0, "YUYV"), (1280, 720, 10.0, "YUYV"), (1280, 720, 30.0, "MJPG")]
    world = FakeCameraWorld({0: FakeCamera(modes=modes)})
    source = WebcamSource(0, 1280, 720, 30, capture_factory=world.factory)
    source.open()
    capture = world.captures[-1]
    assert capture.api == cv2.CAP_V4L2
    assert capture.requested[cv2.CAP_PROP_FOURCC] == fourcc_code("MJPG")
    assert source.size == (1280, 720) and source.fps == 30.0
    assert "1280x720 @ 30 fps" in source.description and "MJPG" in source.description
    assert "Integrated Camera" in source.description
    frames = [source.read() for _ in range(3)]
    assert [frame.index for frame in frames] == [0, 1, 2]
    image = frames[1].image
    assert image.shape == (720, 1280, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
    assert tuple(image[5, 5]) == (FAKE_RED, FAKE_GREEN, FAKE_BLUE)
    assert [int(frame.image[0, 0, 2]) for frame in frames] == [0, 1, 2]  # the first frame read at open is kept
    source.close()
    assert capture.released


def test_webcam_reports_what_it_got_when_it_differs(linux_sysfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    world = FakeCameraWorld({0: FakeCamera(modes=[(640, 480, 15.0, "YUYV")])})
    source = WebcamSource(0, 1280, 720, 30, capture_factory=world.factory)
    with caplog.at_level(logging.INFO, logger="vcam.sources.webcam"):
        source.open()
    assert source.size == (640, 480) and source.fps == 15.0
    assert source.read().image.shape == (480, 640, 3)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("asked for 1280x720 @ 30 fps" in message and "640x480 @ 15 fps" in message for message in warnings)


def test_webcam_index_that_does_not_exist_is_a_user_error(linux_sysfs: Path) -> None:
    world = FakeCameraWorld({0: FakeCamera()})
    source = WebcamSource(3, 640, 480, 30, capture_factory=world.factory)
    with pytest.raises(SourceError, match=r"webcam 3 does not exist .*0: Integrated Camera"):
        source.open()
    source.close()  # safe after a failed open


def test_webcam_in_use_at_start_is_a_user_error(linux_sysfs: Path) -> None:
    world = FakeCameraWorld({0: FakeCamera(busy=True)})
    with pytest.raises(SourceError, match="another application"):
        WebcamSource(0, 640, 480, 30, capture_factory=world.factory).open()


def test_webcam_unplugged_mid_run_is_unavailable_until_it_comes_back(linux_sysfs: Path) -> None:
    camera = FakeCamera()
    world = FakeCameraWorld({0: camera})
    source = WebcamSource(0, 640, 480, 30, capture_factory=world.factory)
    source.open()
    source.read()
    source.read()
    camera.plugged = False
    with pytest.raises(SourceUnavailable, match="stopped sending frames"):
        source.read()
    source.close()
    with pytest.raises(SourceUnavailable) as reopen_error:
        source.open()
    assert type(reopen_error.value) is SourceUnavailable  # not a SourceError: the runtime keeps retrying
    camera.plugged = True
    source.open()
    frame = source.read()
    assert frame.index == 0 and frame.image.shape == (480, 640, 3)


def test_webcam_by_name_matches_sysfs(linux_sysfs: Path) -> None:
    world = FakeCameraWorld({0: FakeCamera(), 2: FakeCamera()})
    source = WebcamSource("integrated camera", 640, 480, 30, capture_factory=world.factory)
    source.open()
    assert world.captures[-1].target == 0
    assert source.camera_name == "Integrated Camera: Integrated C"
    with pytest.raises(SourceError, match=r"no webcam named 'Nope' \(found: 0: Integrated Camera"):
        WebcamSource("Nope", 640, 480, 30, capture_factory=world.factory).open()


def test_webcam_auto_skips_our_own_loopback_device(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, linux_sysfs: Path
) -> None:
    sysfs = make_fake_sysfs(
        tmp_path / "sys2",
        [FakeSysfsDevice(0, "Live2Diff Camera", loopback=True), FakeSysfsDevice(4, "USB Camera")],
    )
    monkeypatch.setattr(v4l2_module, "SYSFS_VIDEO4LINUX", sysfs)
    world = FakeCameraWorld({0: FakeCamera(), 4: FakeCamera()})
    source = WebcamSource(None, 640, 480, 30, capture_factory=world.factory)
    source.open()
    assert [capture.target for capture in world.captures] == [4]
    assert "USB Camera" in source.description


def test_webcam_auto_without_a_real_camera_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, linux_sysfs: Path
) -> None:
    sysfs = make_fake_sysfs(tmp_path / "sys3", [FakeSysfsDevice(0, "Live2Diff Camera", loopback=True)])
    monkeypatch.setattr(v4l2_module, "SYSFS_VIDEO4LINUX", sysfs)
    world = FakeCameraWorld({0: FakeCamera()})
    with pytest.raises(SourceError, match=r"no webcam found \(virtual cameras skipped: 0: Live2Diff Camera.*demo"):
        WebcamSource(None, 640, 480, 30, capture_factory=world.factory).open()
    assert world.captures == []


def test_webcam_names_are_linux_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    world = FakeCameraWorld({0: FakeCamera()})
    with pytest.raises(SourceError, match="supported on Linux only; use its index"):
        WebcamSource("Logitech", 640, 480, 30, capture_factory=world.factory).open()


def test_webcam_on_windows_tries_dshow_then_msmf(monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    monkeypatch.setattr(sys, "platform", "win32")
    world = FakeCameraWorld({})
    with pytest.raises(SourceError, match=r"could not be opened \(tried DSHOW, MSMF\)"):
        WebcamSource(1, 640, 480, 30, capture_factory=world.factory).open()
    assert [capture.api for capture in world.captures] == [cv2.CAP_DSHOW, cv2.CAP_MSMF]


# ---------------------------------------------------------------- video file


def _write_clip(path: Path, frames: int = 12, fps: int = 24, size: tuple[int, int] = (64, 48)) -> None:
    """A short mpeg4 clip whose frame k is a flat colour with red = 20 * k."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for k in range(frames):
            image = np.zeros((size[1], size[0], 3), dtype=np.uint8)
            image[:] = (20 * k, 100, 60)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_file_reads_loops_and_reports_size_and_fps(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    _write_clip(clip)
    source = VideoFileSource(clip, realtime=False)
    source.open()
    assert source.size == (64, 48) and source.fps == pytest.approx(24.0)
    reds = [int(source.read().image[24, 32, 0]) for _ in range(14)]
    source.close()
    assert reds[:12] == pytest.approx([20 * k for k in range(12)], abs=8)
    assert reds[12] == pytest.approx(reds[0], abs=4) and reds[13] == pytest.approx(reds[1], abs=4)
    assert source.loops == 1


def test_video_file_without_loop_ends(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    _write_clip(clip, frames=5)
    source = VideoFileSource(clip, loop=False, realtime=False)
    source.open()
    frames = [source.read() for _ in range(5)]
    assert [frame.index for frame in frames] == [0, 1, 2, 3, 4]
    with pytest.raises(EndOfVideo):
        source.read()


def test_video_file_is_paced_at_the_given_fps(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    _write_clip(clip, frames=8)
    clock = ManualClock(auto_advance=True)
    source = VideoFileSource(clip, fps=50, clock=clock)
    source.open()
    start = clock.now()
    stamps = [source.read().timestamp - start for _ in range(6)]
    assert source.fps == 50.0
    assert stamps == pytest.approx([index / 50 for index in range(6)], abs=1e-9)


def test_video_file_missing_or_unreadable_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"video file '.*nope\.mp4' not found"):
        VideoFileSource(tmp_path / "nope.mp4").open()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError, match=r"cannot read video file '.*garbage\.mp4'"):
        VideoFileSource(garbage).open()
    with pytest.raises(SourceError, match="is a folder"):
        VideoFileSource(tmp_path).open()


def test_video_file_gone_after_start_is_unavailable(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    _write_clip(clip, frames=3)
    source = VideoFileSource(clip, realtime=False)
    source.open()
    source.close()
    clip.unlink()
    with pytest.raises(SourceUnavailable):
        source.open()


# ---------------------------------------------------------------- screen


class _FakeGrabber:
    """mss-like: monitor 0 = everything, monitor 1 = a 200x100 screen whose pixels are BGRA (1, 2, 3, 255)."""

    def __init__(self) -> None:
        self.monitors = [
            {"left": 0, "top": 0, "width": 200, "height": 100},
            {"left": 0, "top": 0, "width": 200, "height": 100},
        ]
        self.closed = False

    def grab(self, region: dict[str, int]) -> np.ndarray:
        image = np.empty((region["height"], region["width"], 4), dtype=np.uint8)  # [h, w, 4] BGRA
        image[:] = (1, 2, 3, 255)
        return image

    def close(self) -> None:
        self.closed = True


def test_screen_letterboxes_into_the_configured_size() -> None:
    source = ScreenSource(1, 160, 120, fps=30, grabber_factory=_FakeGrabber, realtime=False)
    source.open()
    frame = source.read()
    source.close()
    assert source.size == (160, 120)
    assert frame.image.shape == (120, 160, 3) and frame.image.dtype == np.uint8
    # 200x100 scaled to 160x80, centred: black bars of 20 rows above and below
    assert tuple(frame.image[60, 80]) == (3, 2, 1)
    assert frame.image[:19].max() == 0 and frame.image[101:].max() == 0
    assert "200x100" in source.description


def test_screen_monitor_out_of_range_lists_monitors() -> None:
    with pytest.raises(SourceError, match=r"no monitor 3 .*1: 200x100.*screen:1 \.\. screen:1"):
        ScreenSource(3, 160, 120, fps=30, grabber_factory=_FakeGrabber).open()


def test_letterbox_keeps_aspect_for_tall_images() -> None:
    tall = np.full((200, 100, 3), 255, dtype=np.uint8)
    boxed = letterbox(tall, 160, 100)
    assert boxed.shape == (100, 160, 3)
    assert boxed[:, :50].max() == 0 and boxed[:, 110:].max() == 0 and boxed[50, 80].min() == 255


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the no-display case is tested on Linux")
def test_screen_without_display_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(SourceError, match="no display available"):
        ScreenSource(1, 160, 120, fps=30).open()


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display")
def test_screen_real_grab() -> None:
    source = ScreenSource(1, 320, 180, fps=30, realtime=False)
    source.open()
    frame = source.read()
    source.close()
    assert frame.image.shape == (180, 320, 3)


# ---------------------------------------------------------------- specs


def test_parse_source_builds_each_kind(linux_sysfs: Path) -> None:
    demo = parse_source(" Demo ", 320, 240, 15)
    assert isinstance(demo, DemoSource) and demo.size == (320, 240) and demo.fps == 15.0
    assert isinstance(parse_source("webcam", 640, 480, 30), WebcamSource)
    by_index = parse_source("webcam:2", 640, 480, 30)
    assert isinstance(by_index, WebcamSource) and by_index.device == 2
    by_name = parse_source("webcam:Integrated Camera", 640, 480, 30)
    assert isinstance(by_name, WebcamSource) and by_name.device == "Integrated Camera"
    video = parse_source("file:~/clip.mp4", 640, 480, 30)
    assert isinstance(video, VideoFileSource) and video.path == Path("~/clip.mp4").expanduser()
    screen = parse_source("screen:2", 640, 480, 30)
    assert isinstance(screen, ScreenSource) and screen.monitor == 2


def test_the_auto_source_is_the_webcam_when_there_is_one(linux_sysfs: Path) -> None:
    from vcam.assemble import resolve_auto_source

    assert resolve_auto_source("auto") == "webcam"
    assert resolve_auto_source("screen:2") == "screen:2"  # any other spec is kept as written


def test_the_auto_source_falls_back_to_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from vcam.assemble import resolve_auto_source

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(v4l2_module, "SYSFS_VIDEO4LINUX", make_fake_sysfs(tmp_path, []))
    assert resolve_auto_source("auto") == "demo"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("bogus", "unknown source"),
        ("", "empty source"),
        ("webcam:", "needs an index or a name"),
        ("file:", "needs a path"),
        ("screen:left", "monitor must be a number"),
        ("demo:3", "unknown source"),
    ],
)
def test_parse_source_errors_list_valid_forms(spec: str, problem: str) -> None:
    with pytest.raises(SourceError, match=problem) as error:
        parse_source(spec, 640, 480, 30)
    assert "webcam:N" in str(error.value) and "file:PATH" in str(error.value) and "demo" in str(error.value)


def test_parse_source_suggests_file_prefix_for_a_bare_path(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    with pytest.raises(SourceError, match="write 'file:"):
        parse_source(str(clip), 640, 480, 30)


def test_sources_package_imports_no_heavy_modules() -> None:
    code = "import sys, vcam.sources; print(sorted(m for m in ('cv2', 'av', 'mss') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
