"""Regression tests from the adversarial QA pass: bad input of every kind gets a clear message and loses nothing."""

from __future__ import annotations

import errno
import os
import random
import signal
import socket
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.pipeline_helpers import moving_frames, write_clip
from tests.waiting import wait_until
from vcam.cli import main
from vcam.config import update_config
from vcam.errors import ConfigError, SourceError
from vcam.frame import Frame
from vcam.runtime import Runtime
from vcam.sinks.base import Sink
from vcam.sinks.file import FileSink
from vcam.sources.base import Source
from vcam.sources.demo import DemoSource

W, H, FPS = 64, 48, 60.0


class CountingSink(Sink):
    description = "counting"

    def __init__(self) -> None:
        self.sent = 0
        self.closed = 0

    def open(self, width: int, height: int, fps: float) -> None:
        self.size = (width, height)

    def send(self, image: np.ndarray) -> None:
        self.sent += 1

    def close(self) -> None:
        self.closed += 1


class FailingAfterSink(CountingSink):
    description = "failing"

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def send(self, image: np.ndarray) -> None:
        if self.sent >= self.after:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().send(image)


# ---------------------------------------------------------------------------------------------- sinks mid-run
def test_a_sink_failing_mid_run_is_dropped_and_the_others_keep_going() -> None:
    good, bad = CountingSink(), FailingAfterSink(after=3)
    runtime = Runtime(DemoSource(W, H, FPS), [good, bad], width=W, height=H, fps=FPS)
    runtime.start()
    try:
        wait_until(lambda: good.sent >= 20)
        status = runtime.status()
        assert runtime.running and runtime.failure is None
        assert good.sent >= 20 and bad.sent == 3
        assert bad.closed == 1
        assert status.sinks == ("counting",)
        assert status.last_error is not None and "failing" in status.last_error and "No space" in status.last_error
        assert "still sending to counting" in status.last_error
    finally:
        runtime.stop()
    assert bad.closed == 1 and good.closed == 1  # the dropped sink is not closed twice


def test_when_every_sink_fails_the_runtime_stops_with_a_failure() -> None:
    runtime = Runtime(DemoSource(W, H, FPS), [FailingAfterSink(after=2)], width=W, height=H, fps=FPS)
    runtime.start()
    wait_until(lambda: not runtime.running)
    runtime.stop()
    assert runtime.failure is not None and "every output failed" in runtime.failure


class DiskFullContainer:
    """A PyAV output container whose disk filled up: every write fails, closing works."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def mux(self, packet: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        self.real.close()


def test_a_full_disk_stops_the_recording_but_not_the_camera(tmp_path: Path) -> None:
    good = CountingSink()
    recording = FileSink(tmp_path / "out.mp4")
    runtime = Runtime(DemoSource(W, H, FPS), [good, recording], width=W, height=H, fps=FPS)
    runtime.start()
    try:
        recording._container = DiskFullContainer(recording._container)
        wait_until(lambda: runtime.status().last_error is not None)
        sent_when_failed = good.sent
        wait_until(lambda: good.sent >= sent_when_failed + 10)
        status = runtime.status()
        assert runtime.running and good.sent >= sent_when_failed + 10
        assert status.last_error is not None and "No space left" in status.last_error
        assert status.sinks == ("counting",)
    finally:
        runtime.stop()


# ---------------------------------------------------------------------------------------------- sources mid-run
class DyingSource(Source):
    """Works for `frames` reads, then fails with an OSError (its file was deleted) and cannot be reopened."""

    description = "dying"

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self.reads = 0
        self.opens = 0

    def open(self) -> None:
        self.opens += 1
        if self.opens > 1:
            raise SourceError("video file 'gone.mp4' not found")

    def read(self) -> Frame:
        self.reads += 1
        if self.reads > self.frames:
            raise OSError(errno.ENOENT, "No such file or directory")
        time.sleep(1 / FPS)
        image = np.full((H, W, 3), 100, np.uint8)
        return Frame(image=image, timestamp=time.monotonic(), index=self.reads)

    def close(self) -> None:
        self.closed = True

    @property
    def size(self) -> tuple[int, int]:
        return (W, H)

    @property
    def fps(self) -> float:
        return FPS


def test_a_source_failing_unexpectedly_shows_the_reconnect_slate_and_keeps_sending() -> None:
    sink = CountingSink()
    runtime = Runtime(DyingSource(frames=5), [sink], width=W, height=H, fps=FPS)
    runtime.start()
    try:
        wait_until(lambda: runtime.status().state == "reconnecting")
        assert runtime.status().state == "reconnecting"
        before = sink.sent
        wait_until(lambda: sink.sent >= before + 10)
        assert runtime.running and sink.sent >= before + 10 and runtime.failure is None
    finally:
        runtime.stop()


# ---------------------------------------------------------------------------------------------- vcam run flags
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--fps", "0"], "output.fps = 0.0"),
        (["--source", ""], "--source is empty"),
        (["--style", ""], "--style is empty"),
        (["--segment", "replace", "--background", " "], "--background is empty"),
        (["--segment", "replace"], "--background IMAGE"),
    ],
)
def test_run_rejects_explicit_bad_values_instead_of_ignoring_them(
    flags: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = [] if flags[0] == "--source" else ["--source", "demo"]
    code = main(["run", "--sink", "null", "--frames", "2", *source, *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err and "Traceback" not in err


def test_save_never_writes_a_setting_that_failed(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    original = '# my camera\n[style]\nname = "sketch"  # the look I like\n'
    config.write_text(original)
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    args = ["run", "--source", "demo", "--sink", "null", "--frames", "2", "--config", str(config), "--save"]
    assert main([*args, "--segment", "replace", "--background", str(not_an_image)]) == 2
    assert main([*args, "--size", "1279x720"]) == 2
    assert config.read_text() == original


def test_save_keeps_comments_and_saves_the_background_with_replace(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('# my camera\n[style]\nname = "sketch"  # the look I like\n')
    background = tmp_path / "room.png"
    import cv2

    cv2.imwrite(str(background), np.full((48, 64, 3), 90, np.uint8))
    argv = ["run", "--source", "demo", "--sink", "null", "--frames", "2", "--config", str(config), "--save"]
    assert main([*argv, "--style", "cartoon", "--segment", "replace", "--background", str(background)]) == 0
    text = config.read_text()
    assert "# my camera" in text and "# the look I like" in text
    data = tomllib.loads(text)
    assert data["style"]["name"] == "cartoon"
    assert data["segment"] == {"mode": "replace", "background_image": str(background)}


# ---------------------------------------------------------------------------------------------- config writes
def test_concurrent_saves_all_land_and_the_file_stays_valid(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("# mine\n")
    names = ["cartoon", "sketch", "posterize", "thermal"]
    errors: list[BaseException] = []

    def save(index: int) -> None:
        try:
            for _ in range(5):
                update_config({"style.name": names[index], "style.seed": index}, path)
                update_config({f"camera.{['width', 'height'][index % 2]}": 640 + 2 * index}, path)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    data = tomllib.loads(path.read_text())
    assert data["style"]["name"] in names
    assert data["camera"]["width"] in (640, 644) and data["camera"]["height"] in (642, 646)  # no save was lost
    assert path.read_text().startswith("# mine")


def test_a_failed_save_is_a_user_error_and_leaves_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[style]\nname = "sketch"\n')

    def disk_full(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(ConfigError, match="No space left on device.*unchanged"):
        update_config({"style.name": "cartoon"}, path)
    assert path.read_text() == '[style]\nname = "sketch"\n'
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]


def test_an_invalid_save_says_the_file_is_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("# keep me\n")
    with pytest.raises(ConfigError, match="not saved: segment.mode = 'glitter'.*unchanged"):
        update_config({"segment.mode": "glitter"}, path)
    assert path.read_text() == "# keep me\n"


def test_a_config_folder_is_named_once_with_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["styles", "--config", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count(str(tmp_path)) == 1 and "it is a folder" in err and "config.toml" in err


# ---------------------------------------------------------------------------------------------- translate
def test_translate_refuses_to_overwrite_its_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = write_clip(tmp_path / "in.mp4", moving_frames(4, width=32, height=32))
    before = clip.read_bytes()
    assert main(["translate", str(clip), str(clip), "--style", "cartoon", "--no-progress"]) == 2
    assert "is the input video" in capsys.readouterr().err
    assert clip.read_bytes() == before


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda t: (t, t / "out.mp4"), "is a folder"),
        (lambda t: (t / "in.mp4", t / "missing" / "out.mp4"), "does not exist; create it"),
        (lambda t: (t / "in.mp4", t), "is a folder: give a file name"),
    ],
)
def test_translate_path_mistakes(tmp_path: Path, make: Any, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    write_clip(tmp_path / "in.mp4", moving_frames(3, width=32, height=32))
    source, output = make(tmp_path)
    assert main(["translate", str(source), str(output), "--style", "cartoon", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not (tmp_path / "missing").exists()


def test_translate_of_a_damaged_video_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = write_clip(tmp_path / "in.mp4", moving_frames(30, width=96, height=64), fps=30)
    data = bytearray(clip.read_bytes())
    moov = data.find(b"moov")
    rng = random.Random(1)
    for index in range(200, moov - 200, 5):  # the frames' data, not the index that locates them
        data[index] = rng.randrange(256)
    clip.write_bytes(bytes(data))
    code = main(["translate", str(clip), str(tmp_path / "out.mp4"), "--style", "cartoon", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "damaged" in err, err
    assert "[Errno" not in err


def test_a_text_file_as_video_source_has_no_errno_noise(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert main(["run", "--source", f"file:{text}", "--sink", "null", "--frames", "2"]) == 2
    err = capsys.readouterr().err
    assert "cannot read video file" in err and "[Errno" not in err


# ---------------------------------------------------------------------------------------------- signals
def test_ctrl_c_anywhere_in_a_command_is_a_clean_stop_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(args: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("vcam.cli.build_parser", _parser_with_handler(interrupted))
    assert main(["styles"]) == 0  # a stop that was asked for: exit 0 (1 is a failure, 2 bad input)
    assert capsys.readouterr().err == "vcam: stopped\n"


def _parser_with_handler(handler: Any) -> Any:
    from vcam.cli import build_parser

    def build() -> Any:
        parser = build_parser()
        parse = parser.parse_args

        def parse_with_handler(argv: Any = None) -> Any:
            namespace = parse(argv)
            namespace.handler = handler
            return namespace

        parser.parse_args = parse_with_handler  # type: ignore[method-assign,assignment]
        return parser

    return build


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_finish_the_command_through_its_finally_blocks(
    monkeypatch: pytest.MonkeyPatch, signum: int
) -> None:
    finished: list[bool] = []

    def terminated(args: Any) -> int:
        try:
            os.kill(os.getpid(), signum)
            time.sleep(5)
            return 0
        finally:
            finished.append(True)

    previous = signal.getsignal(signum)
    monkeypatch.setattr("vcam.cli.build_parser", _parser_with_handler(terminated))
    assert main(["styles"]) == 0
    assert finished == [True]
    assert signal.getsignal(signum) == previous


# ---------------------------------------------------------------------------------------------- messages
def test_devices_says_how_to_install_the_driver_once(capsys: pytest.CaptureFixture[str]) -> None:
    from vcam.devices.virtual_cameras import probe_virtual_camera, virtual_camera_fix

    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    available, _ = probe_virtual_camera()
    assert out.count(virtual_camera_fix()) == (0 if available else 1)


def test_user_errors_leave_no_traceback_above_debug_in_the_log(capsys: pytest.CaptureFixture[str]) -> None:
    from vcam.paths import log_dir

    assert main(["run", "--source", "file:/nonexistent/clip.mp4", "--sink", "null", "--frames", "1"]) == 2
    assert main(["run", "--source", "demo", "--sink", "preview:abc", "--frames", "1"]) == 2
    lines = (log_dir() / "vcam.log").read_text().splitlines()
    tracebacks = [index for index, line in enumerate(lines) if line.startswith("Traceback")]
    assert tracebacks  # the debug record of each user error keeps its traceback for bug reports
    for index in tracebacks:
        assert " DEBUG: " in lines[index - 1], lines[index - 1]  # the record that carries it is debug-level


# ---------------------------------------------------------------------------------------------- privacy
@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every outbound connection attempt (to anything but loopback) is recorded and refused."""
    attempts: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_create_connection = socket.create_connection

    def is_loopback(host: Any) -> bool:
        return isinstance(host, str) and (host in ("localhost", "::1") or host.startswith("127."))

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not is_loopback(host):
            attempts.append(f"getaddrinfo {host}")
            raise socket.gaierror(socket.EAI_NONAME, "network disabled by the test")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and not is_loopback(address[0]):
            attempts.append(f"connect {address}")
            raise OSError(errno.ENETUNREACH, "network disabled by the test")
        real_connect(self, address)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        if not is_loopback(address[0]):
            attempts.append(f"create_connection {address}")
            raise OSError(errno.ENETUNREACH, "network disabled by the test")
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the code itself must not reach out, offline flag or not
    yield attempts


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--source", "demo", "--sink", "null", "--frames", "5"],
        ["run", "--source", "demo", "--sink", "null", "--frames", "5", "--style", "pixar"],
        ["styles"],
        ["doctor"],
        ["doctor", "--json"],
        ["models", "list"],
    ],
)
def test_nothing_reaches_the_network_unless_a_download_is_asked_for(
    argv: list[str], no_network: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(argv)
    capsys.readouterr()
    assert code in (0, 1)
    assert no_network == []


def test_the_preview_binds_to_loopback_and_refuses_foreign_hosts() -> None:
    from vcam.sinks.preview import PreviewSink

    sink = PreviewSink(port=0)
    sink.open(W, H, FPS)
    try:
        assert sink._server is not None and sink._server.server_address[0] == "127.0.0.1"
        request = urllib.request.Request(f"{sink.url}status.json", headers={"Host": "attacker.example:8765"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 403
        with urllib.request.urlopen(f"{sink.url}status.json", timeout=5) as answer:
            assert answer.status == 200
    finally:
        sink.close()
