"""`/stream.ts`: H.264 in MPEG-TS at the camera's rate (checked with ffprobe and PyAV), encoded once for all."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.waiting import wait_for
from vcam.sinks.preview import PreviewSink

WIDTH, HEIGHT = 160, 96


class TsCapture:
    """A raw HTTP client of /stream.ts that keeps every byte of the body until the stream ends."""

    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.socket.sendall(b"GET /stream.ts HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.data = b""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while chunk := self.socket.recv(65536):
            self.data += chunk

    def body(self) -> bytes:
        self.thread.join(10)
        self.socket.close()
        head, _, body = self.data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Type: video/mp2t" in head, head
        return body


def frame(index: int) -> np.ndarray:
    rng = np.random.default_rng(index)
    image = np.full((HEIGHT, WIDTH, 3), (index * 7) % 256, np.uint8)
    image[:, : WIDTH // 4] = rng.integers(0, 256, (HEIGHT, WIDTH // 4, 3), dtype=np.uint8)
    return image


def send_in_step(sink: PreviewSink, count: int, on_frame: dict[int, object] | None = None) -> None:
    """Send `count` frames, each once the TS encoder has encoded the one before (no frame is skipped)."""
    for index in range(count):
        if on_frame and index in on_frame:
            on_frame[index]()  # type: ignore[operator]
        encoded = sink.status_dict()["preview"]["ts_frames_encoded"]
        sink.send(frame(index))
        wait_for(lambda e=encoded: sink.status_dict()["preview"]["ts_frames_encoded"] > e, what="the TS encoder")


def ffprobe(path: Path, *entries: str) -> dict[str, object]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", *entries, "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return json.loads(out)


needs_ffprobe = pytest.mark.skipif(
    shutil.which("ffprobe") is None, reason="ffprobe (Debian's ffmpeg) is not installed"
)


@needs_ffprobe
@pytest.mark.parametrize("fps", [30.0, 15.0])
def test_ffprobe_sees_h264_at_the_camera_rate_without_b_frames(tmp_path: Path, fps: float) -> None:
    sink = PreviewSink(port=0)
    sink.open(WIDTH, HEIGHT, fps)
    try:
        client = TsCapture(sink.port)
        wait_for(lambda: sink.status_dict()["preview"]["ts_clients"] == 1, what="the client")
        send_in_step(sink, 40)
    finally:
        sink.close()
    path = tmp_path / "capture.ts"
    path.write_bytes(client.body())
    rate = f"{int(fps)}/1"
    stream = ffprobe(path, "-show_streams")["streams"][0]  # type: ignore[index]
    assert (stream["codec_name"], stream["r_frame_rate"], stream["avg_frame_rate"]) == ("h264", rate, rate)
    assert stream["has_b_frames"] == 0
    frames = ffprobe(path, "-show_frames", "-show_entries", "frame=key_frame,pict_type,pts")["frames"]  # type: ignore[index]
    assert len(frames) == 40  # every frame sent, none lost, none added
    keys = [index for index, item in enumerate(frames) if item["key_frame"] == 1]
    assert keys[0] == 0 and all(b - a <= fps for a, b in zip(keys, [*keys[1:], len(frames)], strict=True)), keys
    assert {item["pict_type"] for item in frames} <= {"I", "P"}
    steps = {b["pts"] - a["pts"] for a, b in zip(frames, frames[1:], strict=False)}
    assert steps == {90000 // int(fps)}, steps  # 90 kHz clock: exactly one frame period apart


@needs_ffprobe
def test_encoded_once_for_every_client_and_a_late_joiner_starts_at_a_keyframe(tmp_path: Path) -> None:
    import av

    sink = PreviewSink(port=0)
    sink.open(WIDTH, HEIGHT, 30)
    late: list[TsCapture] = []
    try:
        clients = [TsCapture(sink.port) for _ in range(3)]
        wait_for(lambda: sink.status_dict()["preview"]["ts_clients"] == 3, what="three clients")

        def join() -> None:
            late.append(TsCapture(sink.port))
            wait_for(lambda: sink.status_dict()["preview"]["ts_clients"] == 4, what="the late client")

        send_in_step(sink, 75, on_frame={10: join})
        assert sink.status_dict()["preview"]["ts_frames_encoded"] == 75  # once, not once per client
    finally:
        sink.close()
    bodies = [client.body() for client in clients]
    assert bodies[0] == bodies[1] == bodies[2]
    late_body = late[0].body()
    assert len(late_body) % 188 == 0 and late_body[::188] == b"\x47" * (len(late_body) // 188)  # whole TS packets
    pids = [(late_body[at + 1] & 0x1F) << 8 | late_body[at + 2] for at in range(0, 188 * 8, 188)]
    assert 0 in pids[:3], pids  # the program table comes first: a player can start here
    assert bodies[0].endswith(late_body)  # the same bytes, from a keyframe on
    path = tmp_path / "late.ts"
    path.write_bytes(late_body)
    with av.open(str(path)) as container:
        decoded = list(container.decode(video=0))
    assert decoded and decoded[0].key_frame
    assert len(decoded) == 75 - 30  # joined at frame 10: starts at the keyframe of frame 30


def test_a_stalled_ts_client_never_holds_up_the_encoder_or_the_others(tmp_path: Path) -> None:
    import av

    sink = PreviewSink(port=0)
    sink.open(WIDTH, HEIGHT, 30)
    try:
        stalled = socket.create_connection(("127.0.0.1", sink.port), timeout=5)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(b"GET /stream.ts HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # and never reads
        reader = TsCapture(sink.port)
        wait_for(lambda: sink.status_dict()["preview"]["ts_clients"] == 2, what="two clients")
        send_in_step(sink, 200)
    finally:
        sink.close()
    stalled.close()
    assert sink.status_dict()["preview"]["ts_frames_encoded"] == 200
    path = tmp_path / "reader.ts"
    path.write_bytes(reader.body())
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 200  # the reading client lost nothing
