"""Remote mode end to end on loopback: `vcam serve` in another process, real WebRTC clients (aiortc, urllib)."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.serve_process import TOKEN, ServerProcess, free_port, post
from tests.waiting import wait_until

pytest.importorskip("aiortc")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    running = ServerProcess(tmp_path, free_port())
    yield running
    running.stop()


def test_wrong_or_missing_token_is_401_and_bad_sdp_is_400(server: ServerProcess) -> None:
    assert post(server.url + "/offer", b"v=0\r\n", "wrong-token-0123456789") == (401, "unauthorized\n")
    assert post(server.url + "/offer", b"v=0\r\n", None)[0] == 401
    assert post(server.url + "/whip", b"v=0\r\n", "x")[0] == 401
    code, text = post(server.url + "/offer", b"hello", TOKEN)
    assert code == 400 and "v=0" in text
    code, text = post(server.url + "/offer", b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", TOKEN)
    assert code == 400 and "Traceback" not in text
    code, text = post(server.url + "/offer", b"v=0\r\n" + b"a" * 70000, TOKEN)
    assert code == 413
    code, _ = post(server.url + "/whep/not-a-stream", b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", TOKEN)
    assert code == 404
    assert server.process.poll() is None  # it survived


def drive(translator: object, frames: list[np.ndarray], until: int, timeout: float) -> list[tuple[int, np.ndarray]]:
    """Call the translator at ~30 fps until `until` styled frames came back; returns (latency, frame) pairs."""
    styled: list[tuple[int, np.ndarray]] = []
    deadline = time.monotonic() + timeout
    call = 0
    while len(styled) < until and time.monotonic() < deadline:
        image = frames[call % len(frames)]
        call += 1
        output = translator(image)  # type: ignore[operator]
        if output is not None and not translator.warming_up and output is not image:  # type: ignore[attr-defined]
            styled.append((translator.latency_frames, output))  # type: ignore[attr-defined]
        time.sleep(1 / 30)
    return styled


def camera_frames(count: int = 30) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(180, 360, 3), dtype=np.uint8)
    return [np.ascontiguousarray(np.roll(base, 4 * i, axis=1)) for i in range(count)]


def test_client_gets_styled_frames_and_reconnects_after_a_server_restart(tmp_path: Path) -> None:
    from vcam.translators.remote import RemoteTranslator

    port = free_port()
    server = ServerProcess(tmp_path, port)
    translator = RemoteTranslator(server.url, TOKEN, "tiny-random")
    frames = camera_frames()
    try:
        styled = drive(translator, frames, until=20, timeout=120)
        assert len(styled) == 20
        latencies = [latency for latency, _ in styled]
        assert all(0 <= latency < 60 for latency in latencies)
        assert max(latencies) >= 1  # the model's T-1 frames plus the network: measured, not assumed
        for _, image in styled:
            assert image.shape == frames[0].shape
            assert min(np.abs(image.astype(int) - frame.astype(int)).mean() for frame in frames) > 10
        assert translator.problem is None

        connection = translator.connection  # strength over the data channel, then the status shows the steps
        assert connection.server_status["t_index_list"] == [30, 40]
        connection.control({"strength": 0.8})
        assert wait_until(lambda: connection.server_status.get("t_index_list") == [10, 40], 30)
        assert connection.server_status["strength"] == 0.8
        assert len(drive(translator, frames, until=5, timeout=120)) == 5  # styled frames on the new steps
        connection.control({"t_index_list": [40, 30]})
        assert wait_until(lambda: connection.server_error is not None, 30)
        assert "t_index_list = [40, 30] is not allowed" in str(connection.server_error)

        server.stop()  # the server goes away: plain frames, a clear problem, no stall
        assert wait_until(lambda: translator.problem is not None and "unavailable" in translator.problem, 30)
        assert translator(frames[0]) is frames[0]  # the plain look, at once
        assert translator.latency_frames == 0

        server = ServerProcess(tmp_path, port)  # back: the client reconnects by itself
        styled = drive(translator, frames, until=5, timeout=120)
        assert len(styled) == 5
        assert translator.connection.connects >= 2
    finally:
        translator.close()
        server.stop()


def test_a_killed_client_is_dropped_freed_and_the_next_one_served(tmp_path: Path) -> None:
    """SIGKILLed clients (no DELETE, no DTLS close): the idle watchdog drops each, the next is served (one
    client at most), and the server's memory settles (`vcam bench serve --cycles 50` runs the long version)."""
    from vcam.bench.serve_cycles import connect_kill_cycles

    server = ServerProcess(tmp_path, free_port(), extra=("--max-clients", "1", "--idle-timeout", "2"))
    try:
        figures = connect_kill_cycles(server.url, TOKEN, server.process.pid, cycles=4, drop_timeout=60)
        assert len(figures.drop_s) == 4  # each client was served, so the one killed before it had been freed
        first, last = figures.rss_kib[0], figures.rss_kib[-1]
        assert abs(last - first) / first < 0.05, figures.rss_kib
        assert server.process.poll() is None
    finally:
        server.stop()


def test_whip_publish_with_audio_and_whep_pull(server: ServerProcess) -> None:
    asyncio.run(_whip_and_whep(server.url))


async def _whip_and_whep(url: str) -> None:
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import AudioStreamTrack

    from vcam.serve.rtc import FrameQueueTrack, allow_loopback_candidates

    allow_loopback_candidates()
    loop = asyncio.get_running_loop()
    publisher = RTCPeerConnection()
    camera = FrameQueueTrack.create(loop)
    publisher.addTransceiver(camera, direction="sendonly")
    publisher.addTransceiver(AudioStreamTrack(), direction="sendonly")  # OBS always offers audio
    await publisher.setLocalDescription(await publisher.createOffer())
    request = urllib.request.Request(
        url + "/whip",
        data=publisher.localDescription.sdp.encode(),
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/sdp"},
    )
    response = await loop.run_in_executor(None, lambda: urllib.request.urlopen(request, timeout=60))
    assert response.status == 201
    answer = response.read().decode()
    location = response.headers["Location"]
    link = response.headers["Link"]
    assert location.startswith("/whip/") and 'rel="vcam-whep"' in link
    assert "m=audio" in answer and "a=inactive" in answer.split("m=audio", 1)[1].split("m=", 1)[0]
    await publisher.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    frames = camera_frames()
    feeding = True

    async def feed() -> None:
        index = 0
        while feeding:
            camera.put(frames[index % len(frames)], index * 3000)
            index += 1
            await asyncio.sleep(1 / 30)

    feeder = asyncio.ensure_future(feed())
    viewer = RTCPeerConnection()
    viewer.addTransceiver("video", direction="recvonly")
    await viewer.setLocalDescription(await viewer.createOffer())
    whep = link.split(">", 1)[0].lstrip("<")
    status, wrong = await loop.run_in_executor(
        None, post, url + whep + "x", viewer.localDescription.sdp.encode(), TOKEN
    )
    assert status == 404  # another key reaches no stream
    status, answer = await loop.run_in_executor(None, post, url + whep, viewer.localDescription.sdp.encode(), TOKEN)
    assert status == 201
    received: list[np.ndarray] = []

    async def on_track(track: object) -> None:
        while len(received) < 10:
            frame = await track.recv()  # type: ignore[attr-defined]
            received.append(frame.to_ndarray(format="rgb24"))

    tracks: list[asyncio.Future[None]] = []
    viewer.on("track", lambda track: tracks.append(asyncio.ensure_future(on_track(track))))
    await viewer.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    deadline = time.monotonic() + 120
    while len(received) < 10 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert len(received) >= 10
    assert received[-1].shape == frames[0].shape
    assert min(np.abs(received[-1].astype(int) - f.astype(int)).mean() for f in frames) > 10

    delete = urllib.request.Request(url + location, method="DELETE", headers={"Authorization": f"Bearer {TOKEN}"})
    with await loop.run_in_executor(None, lambda: urllib.request.urlopen(delete, timeout=30)) as done:
        assert done.status == 200
    assert len(whep.removeprefix("/whep/")) == 43  # secrets.token_urlsafe(32)
    status, _ = await loop.run_in_executor(None, post, url + whep, viewer.localDescription.sdp.encode(), TOKEN)
    assert status == 404  # the WHEP resource went with its publisher
    feeding = False
    await feeder
    await viewer.close()
    await publisher.close()
