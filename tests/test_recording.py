"""Recordings (the file sink) never destroy a file, survive kill -9 and SIGHUP, and fail loudly at the right time."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.waiting import wait_for
from vcam.cli import main
from vcam.errors import SinkError
from vcam.runtime import Runtime
from vcam.sinks.file import KEYFRAME_INTERVAL_S, FileSink, RecordingFile
from vcam.sinks.null import NullSink
from vcam.sources.demo import DemoSource

W, H, FPS = 64, 48, 30


def decode(path: Path) -> tuple[int, list[int]]:
    """(frames that decode, indices of the keyframes) of a video file, read with PyAV."""
    import av

    keyframes = []
    count = 0
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            count += 1
            if frame.key_frame:
                keyframes.append(index)
    return count, keyframes


def boxes(path: Path) -> list[bytes]:
    """The top-level MP4 box types in file order."""
    data = path.read_bytes()
    found, offset = [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        found.append(data[offset + 4 : offset + 8])
        if size < 8:
            break
        offset += size
    return found


def frames(count: int) -> list[np.ndarray]:
    return [np.full((H, W, 3), (index * 7) % 256, np.uint8) for index in range(count)]


class FillingFile(RecordingFile):
    """A disk that fills up after `room` bytes: the next write fails with ENOSPC, like a full disk."""

    room = 60_000

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.bytes_written + len(memoryview(data)) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


# ---------------------------------------------------------------- never destroy a file, fail at open
def test_an_existing_file_is_refused_unless_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "take1.mp4"
    path.write_bytes(b"yesterday's recording")
    with pytest.raises(SinkError, match=r"take1.mp4 already exists: pick another file name, or pass --overwrite"):
        FileSink(path).open(W, H, FPS)
    assert path.read_bytes() == b"yesterday's recording"
    sink = FileSink(path, overwrite=True)
    sink.open(W, H, FPS)
    for image in frames(3):
        sink.send(image)
    sink.close()
    assert decode(path)[0] == 3


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (lambda t: Path("/proc/vcam-test.mp4"), "cannot write /proc/vcam-test.mp4"),
        (lambda t: t / "missing" / "out.mp4", "does not exist; create it"),
        (lambda t: t / "plain.txt" / "out.mp4", "is a file, not a folder"),
        (lambda t: t / "out.avi", "writes .mp4, .m4v, .mov or .mkv files"),
    ],
)
def test_an_unwritable_path_fails_when_the_sink_opens(tmp_path: Path, where: Any, expected: str) -> None:
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(SinkError, match=expected):
        FileSink(where(tmp_path)).open(W, H, FPS)


def test_run_refuses_an_unwritable_or_existing_recording_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "x.mp4"
    existing.write_bytes(b"keep me")
    for sink, expected in (
        ("file:/proc/x.mp4", "cannot write /proc/x.mp4"),
        (f"file:{existing}", "already exists"),
        (f"file:{tmp_path / 'none' / 'x.mp4'}", "does not exist"),
    ):
        code = main(["run", "--source", "demo", "--sink", sink, "--frames", "5", "--size", "128x72"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.count("\n") == 1 and expected in err and "sent" not in err, err
    assert existing.read_bytes() == b"keep me"
    overwrite = ["--sink", f"file:{existing}", "--frames", "5", "--size", "128x72", "--overwrite"]
    assert main(["run", "--source", "demo", *overwrite]) == 0
    assert decode(existing)[0] == 5


# ---------------------------------------------------------------- what a file looks like
def test_a_clean_close_leaves_a_regular_mp4_with_keyframes_every_second(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    sink = FileSink(path)
    sink.open(W, H, FPS)
    for image in frames(75):
        sink.send(image)
    sink.close()
    count, keyframes = decode(path)
    assert count == 75
    assert keyframes[0] == 0 and max(np.diff([*keyframes, count])) <= FPS * KEYFRAME_INTERVAL_S
    layout = boxes(path)
    assert b"moof" not in layout  # not fragmented: every player and editor opens it
    assert layout.index(b"moov") < layout.index(b"mdat")  # faststart: the index in front
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no temporary left


def test_while_recording_the_file_is_fragmented_and_plays_up_to_the_last_keyframe(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    sink = FileSink(path)
    sink.open(W, H, FPS)
    for image in frames(70):
        sink.send(image)
    wait_for(lambda: sink.frames_written == 70, what="the writer thread")
    snapshot = tmp_path / "snapshot.mp4"
    snapshot.write_bytes(path.read_bytes())  # what a kill -9 would leave now: no close, no trailer
    sink.close()
    assert boxes(snapshot)[:2] == [b"ftyp", b"moov"] and b"moof" in boxes(snapshot)
    count, _ = decode(snapshot)
    assert count >= 70 - FPS * KEYFRAME_INTERVAL_S  # everything up to the last second plays


# ---------------------------------------------------------------- a disk that fills up
def test_a_full_disk_drops_the_recording_at_the_first_failed_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "out.mp4"
    recording = FileSink(path, open_file=lambda p, overwrite: FillingFile.create(p, overwrite))
    other = NullSink()
    runtime = Runtime(DemoSource(W, H, FPS, realtime=False), [recording, other], width=W, height=H, fps=120)
    runtime.start(max_frames=1200)
    try:
        assert runtime.wait(frames=1200, timeout=120)
        status = runtime.status()
    finally:
        runtime.stop()
    assert recording.incomplete and "No space left on device" in recording.error_text
    assert status.sinks == ("null",)  # dropped; the other sink kept going to the end
    assert status.last_error is not None and "incomplete" in status.last_error
    errors = [record for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1 and not errors[0].exc_info, [r.getMessage() for r in errors]  # one line
    assert 0 < decode(path)[0] <= recording.frames_written < 1200  # the fragments written before the disk filled play


def test_run_with_a_full_disk_says_the_recording_is_incomplete_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(FillingFile, "room", 20_000)

    def filling_file(cls: type[RecordingFile], path: Path, overwrite: bool) -> RecordingFile:
        return FillingFile(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL), path)

    monkeypatch.setattr(RecordingFile, "create", classmethod(filling_file))
    path = tmp_path / "out.mp4"
    sinks = ["--sink", f"file:{path}", "--sink", "null"]
    code = main(["run", "--source", "demo", *sinks, "--frames", "150", "--size", "160x96", "--fps", "60"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "sent 150 frames" in err  # the other output got every frame
    assert f"the recording {path} is incomplete" in err and "No space left on device" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------- kill -9 and SIGHUP, in a real process
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _frames_out(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=5) as response:
            return int(json.load(response)["frames_out"])
    except OSError:
        return 0


def _record_until(tmp_path: Path, frames: int) -> tuple[subprocess.Popen[str], Path, int]:
    """Start `vcam run --source demo --sink file:x.mp4` and return once it has sent `frames` frames."""
    path = tmp_path / "x.mp4"
    port = _free_port()
    env = {**os.environ, "VCAM_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "vcam", "run", "--source", "demo", "--size", "320x180", "--fps", str(FPS)]
    command += ["--sink", f"file:{path}", "--sink", f"preview:{port}"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for(lambda: _frames_out(port) >= frames or process.poll() is not None, timeout=120, what="frames")
    except AssertionError:
        process.kill()
        raise
    assert process.poll() is None, process.communicate()[1]
    return process, path, port


def test_a_recording_survives_kill_9(tmp_path: Path) -> None:
    seconds = 4
    process, path, _ = _record_until(tmp_path, seconds * FPS)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=20)
    assert process.stderr is not None
    process.stderr.close()
    count, _ = decode(path)
    assert count >= (seconds - 1) * FPS, count


def test_sighup_stops_cleanly_with_a_complete_file(tmp_path: Path) -> None:
    process, path, port = _record_until(tmp_path, 2 * FPS)
    process.send_signal(signal.SIGHUP)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    sent = int(err.split("vcam: sent ")[1].split()[0])
    assert "Traceback" not in err
    count, _ = decode(path)
    assert count == sent >= 2 * FPS
    assert b"moof" not in boxes(path)  # finished as a regular MP4
