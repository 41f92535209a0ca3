"""Sinks: virtual camera (through a fake pyvirtualcam backend), preview over HTTP, file, null, parse_sink."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.fakes.virtual_camera import FakeVirtualCamera, fake_backend
from tests.waiting import wait_for
from vcam.devices.virtual_cameras import list_loopback_devices, probe_virtual_camera, virtual_camera_fix
from vcam.errors import SinkError
from vcam.sinks import parse_sink
from vcam.sinks.file import FileSink
from vcam.sinks.null import NullSink
from vcam.sinks.preview import PreviewSink, is_local_host_header
from vcam.sinks.virtual_camera import VirtualCameraSink

WIDTH, HEIGHT = 64, 48


def left_marked(width: int = WIDTH, height: int = HEIGHT, level: int = 40) -> np.ndarray:
    """A dark frame with a white band on its left quarter and a red band at the top right."""
    image = np.full((height, width, 3), level, np.uint8)  # [h, w, 3]
    image[:, : width // 4] = 255
    image[: height // 4, width * 3 // 4 :] = (255, 0, 0)
    return image


def assert_left_marked(image: np.ndarray, tolerance: int) -> None:
    height, width = image.shape[:2]
    left = image[height // 2, : width // 8].astype(int)
    right = image[height // 2, width * 5 // 8 : width * 3 // 4].astype(int)
    assert (left >= 255 - tolerance).all(), "the white band is not on the left: the frame was mirrored or lost"
    assert right.max() < 255 - 80, "the right side is as bright as the left band: the frame was mirrored"
    red = image[height // 8, width * 7 // 8].astype(int)
    assert red[0] >= 255 - tolerance and red[1] <= tolerance + 10 and red[2] <= tolerance + 10, f"not red: {red}"


@pytest.fixture
def fake() -> Iterator[type[FakeVirtualCamera]]:
    with fake_backend("fake", keep_frames=3) as backend:
        yield backend


# ---------------------------------------------------------------- virtual camera


def test_virtual_camera_sends_rgb_frames_unmirrored(fake: type[FakeVirtualCamera]) -> None:
    sink = VirtualCameraSink(backend="fake")
    sink.open(WIDTH, HEIGHT, 30)
    image = left_marked()
    for _ in range(5):
        sink.send(image)
    sink.close()
    camera = fake.last()
    assert (camera.width, camera.height, camera.fps) == (WIDTH, HEIGHT, 30)
    assert camera.pixel_format == "RGB" and sink.pixel_format == "RGB"
    assert camera.frames_received == 5 and sink.frames_sent == 5
    assert camera.timestamps == sorted(camera.timestamps)
    np.testing.assert_array_equal(camera.last_rgb(), image)
    assert_left_marked(camera.last_rgb(), tolerance=0)
    assert camera.closed and camera.close_calls == 1
    sink.close()  # a second close does nothing
    assert camera.close_calls == 1


def test_virtual_camera_uses_the_backends_native_i420() -> None:
    with fake_backend("fake_i420", native_format="I420") as native:
        sink = VirtualCameraSink(backend="fake_i420")
        sink.open(WIDTH, HEIGHT, 25)
        sink.send(left_marked())
        sink.close()
        assert sink.pixel_format == "I420"
        assert len(native.instances) == 2 and native.instances[0].closed  # probed in RGB, reopened in I420
        camera = native.last()
        assert camera.pixel_format == "I420"
        assert camera.frames[-1].size == WIDTH * HEIGHT * 3 // 2
        assert_left_marked(camera.last_rgb(), tolerance=12)


def test_virtual_camera_tries_every_backend_when_none_is_named(fake: type[FakeVirtualCamera]) -> None:
    sink = parse_sink("vcam", 8765)
    sink.open(WIDTH, HEIGHT, 30)
    sink.send(left_marked())
    sink.close()
    assert fake.last().frames_received == 1
    assert "Fake Camera" in sink.description


def test_virtual_camera_device_by_name(fake: type[FakeVirtualCamera]) -> None:
    sink = VirtualCameraSink(device="Fake Camera", backend="fake")
    sink.open(WIDTH, HEIGHT, 30)
    sink.close()
    assert fake.last().closed
    by_name = parse_sink("vcam:Fake Camera", 8765)  # every backend is tried; only the fake has that name
    by_name.open(WIDTH, HEIGHT, 30)
    by_name.close()
    assert len(fake.instances) == 2
    missing = VirtualCameraSink(device="No Such Camera", backend="fake")
    with pytest.raises(SinkError, match="No Such Camera"):
        missing.open(WIDTH, HEIGHT, 30)
    missing.close()


def test_virtual_camera_rejects_a_frame_of_the_wrong_size(fake: type[FakeVirtualCamera]) -> None:
    sink = VirtualCameraSink(backend="fake")
    sink.open(WIDTH, HEIGHT, 30)
    with pytest.raises(ValueError, match="unexpected frame"):
        sink.send(np.zeros((HEIGHT, WIDTH + 2, 3), np.uint8))
    sink.close()


def test_virtual_camera_backend_failure_is_a_sink_error_with_the_fix() -> None:
    with fake_backend("broken", fail_with="device busy"):
        sink = VirtualCameraSink(backend="broken")
        with pytest.raises(SinkError) as raised:
            sink.open(WIDTH, HEIGHT, 30)
        sink.close()
    message = str(raised.value)
    assert "device busy" in message
    assert virtual_camera_fix() in message
    assert "--sink preview" in message


def test_unknown_backend_is_a_sink_error() -> None:
    with pytest.raises(SinkError, match="unknown virtual camera backend 'nope'"):
        VirtualCameraSink(backend="nope").open(WIDTH, HEIGHT, 30)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the v4l2loopback backend exists on Linux only")
def test_no_v4l2loopback_driver_is_a_sink_error_with_the_linux_fix() -> None:
    if list_loopback_devices():
        pytest.skip("this machine has a v4l2loopback device")
    sink = VirtualCameraSink(backend="v4l2loopback")
    with pytest.raises(SinkError) as raised:
        sink.open(1280, 720, 30)
    sink.close()
    message = str(raised.value)
    assert "No v4l2 loopback device found" in message
    assert "sudo installers/linux/setup-virtual-camera.sh" in message
    with pytest.raises(SinkError, match="no v4l2loopback device named 'Live2Diff Camera'"):
        VirtualCameraSink(device="Live2Diff Camera", backend="v4l2loopback").open(1280, 720, 30)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sysfs is Linux only")
def test_probe_reports_missing_driver_and_sees_registered_backends() -> None:
    if list_loopback_devices():
        pytest.skip("this machine has a v4l2loopback device")
    present, text = probe_virtual_camera()
    assert not present
    assert "setup-virtual-camera.sh" in text
    with fake_backend("fake_probe"):
        present, text = probe_virtual_camera()
    assert present and "fake_probe" in text


def test_loopback_devices_are_told_from_other_cameras_by_their_driver(tmp_path: Path) -> None:
    for index, name, loopback in ((0, "Integrated Camera", False), (10, "Live2Diff Camera", True)):
        entry = tmp_path / f"video{index}"
        entry.mkdir()
        (entry / "name").write_text(name + "\n")
        if loopback:
            (entry / "max_openers").write_text("10\n")
    devices = list_loopback_devices(tmp_path)
    assert [(d.device, d.name) for d in devices] == [("/dev/video10", "Live2Diff Camera")]
    assert list_loopback_devices(tmp_path / "missing") == []


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        ("linux", "sudo installers/linux/setup-virtual-camera.sh"),
        ("win32", "installers/windows/install.ps1"),
        ("darwin", "installers/macos/install.sh"),
    ],
)
def test_virtual_camera_fix_per_os(system: str, expected: str) -> None:
    text = virtual_camera_fix(system)
    assert expected in text
    if system != "linux":
        assert "OBS" in text


# ---------------------------------------------------------------- preview


def http_get(sink: PreviewSink, path: str, host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=5)
    try:
        connection.putrequest("GET", path, skip_host=host is not None)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


class MjpegClient:
    """Reads a multipart/x-mixed-replace JPEG stream part by part."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        self.connection.request("GET", "/stream.mjpg")
        self.response = self.connection.getresponse()
        content_type = self.response.getheader("Content-Type", "")
        assert self.response.status == 200
        assert content_type.startswith("multipart/x-mixed-replace"), content_type
        self.boundary = content_type.split("boundary=", 1)[1].strip()

    def read_jpeg(self) -> bytes | None:
        """The next JPEG, or None when the stream ended."""
        line = self.response.readline()
        while line in (b"\r\n", b"\n"):
            line = self.response.readline()
        if not line:
            return None
        assert line.strip() == b"--" + self.boundary.encode("ascii"), line
        headers: dict[str, str] = {}
        while True:
            line = self.response.readline().strip()
            if not line:
                break
            key, _, value = line.decode("ascii").partition(":")
            headers[key.strip().lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg"
        body = self.response.read(int(headers["content-length"]))
        assert len(body) == int(headers["content-length"])
        return body

    def close(self) -> None:
        self.connection.close()


def decode_jpeg(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert bgr is not None, "not a JPEG"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture
def preview() -> Iterator[PreviewSink]:
    sink = PreviewSink(port=0)
    sink.open(WIDTH, HEIGHT, 30)
    yield sink
    sink.close()


def test_preview_streams_newest_frames_as_jpeg(preview: PreviewSink) -> None:
    assert preview.url == f"http://127.0.0.1:{preview.port}/" and preview.port > 0
    clients = [MjpegClient(preview.port), MjpegClient(preview.port)]
    deadline = time.monotonic() + 5
    while preview.status_dict()["preview"]["stream_clients"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    levels: list[list[int]] = [[], []]
    for level in (20, 60, 100):
        preview.send(left_marked(level=level))
        for client, seen in zip(clients, levels, strict=True):
            jpeg = client.read_jpeg()
            assert jpeg is not None
            image = decode_jpeg(jpeg)
            assert image.shape == (HEIGHT, WIDTH, 3)
            assert_left_marked(image, tolerance=40)
            seen.append(int(image[HEIGHT // 2, WIDTH * 5 // 8, 1]))
    for seen in levels:
        assert seen == sorted(seen) and abs(seen[-1] - 100) < 12, seen
    assert preview.frames_encoded <= preview.frames_received == 3  # once per frame, not once per client
    preview.close()
    for client in clients:
        assert client.read_jpeg() is None  # the stream ends when the sink closes
        client.close()


def test_preview_slow_client_never_blocks_send_and_close_is_prompt() -> None:
    before = set(threading.enumerate())  # other tests' servers (e.g. the fake hub) are not this sink's
    sink = PreviewSink(port=0)
    width, height = 640, 480
    sink.open(width, height, 30)
    stalled = socket.create_connection(("127.0.0.1", sink.port), timeout=5)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # and never reads
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)  # JPEGs that fill socket buffers fast
    wait_for(lambda: sink.status_dict()["preview"]["stream_clients"] == 1, what="the stalled client's stream")
    sink.send(noise)
    wait_for(lambda: sink.frames_encoded == 1, what="the first frame encoded")
    sent = threading.Event()

    def send_all() -> None:
        for _ in range(120):  # far more than the stalled socket's buffers hold
            sink.send(noise)
        sent.set()

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    # a send() that waited on the stalled client would never return: the bound only catches that hang
    assert sent.wait(60), "send() blocked on a client that does not read"
    wait_for(lambda: sink.frames_encoded > 1, what="the encoder to go on while a client stalls")
    closer = threading.Thread(target=sink.close, daemon=True)
    closer.start()
    closer.join(30)
    assert not closer.is_alive(), "close() hangs on a client that does not read"
    stalled.close()
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not [t for t in left if t.name.startswith("vcam-preview") or "process_request" in t.name], left


def test_preview_page_snapshot_and_status(preview: PreviewSink) -> None:
    status, headers, body = http_get(preview, "/frame.jpg")
    assert status == 503
    status, headers, body = http_get(preview, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'fetch("/stream.mjpg"' in body and b"/status.json" in body and b'class="bare"' not in body
    for path in ("/view", "/?bare=1"):
        status, _, body = http_get(preview, path)
        assert status == 200 and b'<body class="bare">' in body
    preview.send(left_marked())
    status, headers, body = http_get(preview, "/frame.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert_left_marked(decode_jpeg(body), tolerance=40)
    status, headers, body = http_get(preview, "/status.json")
    data = json.loads(body)
    assert data["state"] == "running" and data["preview"]["frames_received"] == 1
    from vcam.status import Status

    preview.bind_status(lambda: Status(state="loading_style", style="anime", fps_out=29.5).to_dict())
    data = json.loads(http_get(preview, "/status.json")[2])
    assert (data["state"], data["style"], data["fps_out"]) == ("loading_style", "anime", 29.5)
    assert data["preview"]["url"] == preview.url
    assert http_get(preview, "/nothing")[0] == 404


@pytest.mark.parametrize(
    "host", ["evil.example", "127.0.0.1.evil.example", "localhost.evil.example:8765", "192.168.1.5:8765", "[::2]"]
)
def test_preview_refuses_non_local_host(preview: PreviewSink, host: str) -> None:
    for path in ("/", "/stream.mjpg", "/status.json", "/frame.jpg"):
        status, _, body = http_get(preview, path, host=host)
        assert status == 403, (host, path, status)


def test_preview_accepts_local_hosts(preview: PreviewSink) -> None:
    for host in ("127.0.0.1", f"127.0.0.1:{preview.port}", "localhost", "LOCALHOST:80", "[::1]", "[::1]:8765"):
        assert http_get(preview, "/status.json", host=host)[0] == 200, host
    assert not is_local_host_header(None) and not is_local_host_header("")
    assert not is_local_host_header("localhost:abc") and not is_local_host_header("[::1]x")


def test_preview_port_in_use_is_a_sink_error() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        sink = PreviewSink(port=port)
        with pytest.raises(SinkError) as raised:
            sink.open(WIDTH, HEIGHT, 30)
        sink.close()
    message = str(raised.value)
    assert str(port) in message and "--sink preview:PORT" in message and "[preview]" in message


def test_preview_binds_loopback_only() -> None:
    with pytest.raises(SinkError, match="loopback"):
        PreviewSink(host="0.0.0.0")
    with pytest.raises(SinkError, match="70000"):
        PreviewSink(port=70000)


# ---------------------------------------------------------------- file and null


def test_file_sink_writes_exactly_the_frames_sent(tmp_path: Path) -> None:
    import av

    path = tmp_path / "out.mp4"
    sink = FileSink(path)
    sink.open(WIDTH, HEIGHT, 30)
    for index in range(12):
        image = left_marked(level=10 + 10 * index)
        sink.send(image)
    sink.close()
    assert sink.frames_written == 12
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (WIDTH, HEIGHT)
        assert stream.average_rate == 30
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 12
    assert_left_marked(frames[0], tolerance=40)
    middle = [int(frame[HEIGHT // 2, WIDTH * 5 // 8, 1]) for frame in frames]
    assert middle == sorted(middle) and middle[-1] > middle[0] + 80, middle


def test_file_sink_keeps_ntsc_rates(tmp_path: Path) -> None:
    import av

    path = tmp_path / "ntsc.mp4"
    sink = FileSink(path)
    sink.open(WIDTH, HEIGHT, 29.97)
    for _ in range(3):
        sink.send(left_marked())
    sink.close()
    with av.open(str(path)) as container:
        from fractions import Fraction

        assert container.streams.video[0].average_rate == Fraction(30000, 1001)
        assert sum(1 for _ in container.decode(video=0)) == 3


def test_file_sink_unwritable_paths(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="does not exist"):
        FileSink(tmp_path / "missing" / "out.mp4").open(WIDTH, HEIGHT, 30)
    with pytest.raises(SinkError, match="is a folder"):
        FileSink(tmp_path).open(WIDTH, HEIGHT, 30)
    with pytest.raises(SinkError, match="even width"):
        FileSink(tmp_path / "odd.mp4").open(WIDTH + 1, HEIGHT, 30)
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(SinkError, match="cannot write"):
                FileSink(locked / "out.mp4").open(WIDTH, HEIGHT, 30)
        finally:
            locked.chmod(0o700)


def test_null_sink_counts_frames() -> None:
    sink = NullSink()
    sink.open(WIDTH, HEIGHT, 30)
    for _ in range(4):
        sink.send(left_marked())
    sink.close()
    assert sink.frames == 4 and sink.closed and sink.last_send_time is not None
    with pytest.raises(ValueError, match="unexpected frame"):
        sink.send(np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(SinkError, match="not open"):
        NullSink().send(left_marked())


# ---------------------------------------------------------------- parse_sink


def test_parse_sink_forms(tmp_path: Path) -> None:
    vcam = parse_sink("vcam", 8765)
    assert isinstance(vcam, VirtualCameraSink) and vcam.device is None
    named = parse_sink("vcam:/dev/video10", 8765)
    assert isinstance(named, VirtualCameraSink) and named.device == "/dev/video10"
    assert isinstance(named := parse_sink("vcam:OBS Virtual Camera", 1), VirtualCameraSink)
    assert named.device == "OBS Virtual Camera"
    preview = parse_sink("preview", 9001)
    assert isinstance(preview, PreviewSink) and preview.port == 9001
    preview = parse_sink(" Preview:9100 ", 9001)
    assert isinstance(preview, PreviewSink) and preview.port == 9100
    recording = parse_sink(f"file:{tmp_path / 'a.mp4'}", 1)
    assert isinstance(recording, FileSink) and recording.path == tmp_path / "a.mp4"
    assert isinstance(parse_sink("null", 1), NullSink)


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("webcam", "unknown sink"),
        ("", "unknown sink"),
        ("auto", "unknown sink"),
        ("null:x", "unknown sink"),
        ("preview:abc", "preview port"),
        ("preview:70000", "preview port"),
        ("file", "needs a path"),
        ("file:", "nothing after"),
        ("vcam:", "nothing after"),
    ],
)
def test_parse_sink_errors_list_the_valid_forms(spec: str, why: str) -> None:
    with pytest.raises(SinkError) as raised:
        parse_sink(spec, 8765)
    message = str(raised.value)
    assert why in message and repr(spec) in message
    assert "vcam:NAME" in message and "preview:PORT" in message and "file:PATH" in message and "null" in message


def test_sinks_package_imports_no_heavy_modules() -> None:
    code = "import sys, vcam.sinks; print(sorted(m for m in ('cv2', 'av', 'pyvirtualcam') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"
