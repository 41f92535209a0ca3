"""The preview page in a real headless Chromium: it notices a dead stream and recovers without a reload."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from tests.chromium import CHROMIUM, Chromium
from vcam.sinks.preview import PreviewSink

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)"
)

WIDTH, HEIGHT = 160, 96


class Feeder:
    """Sends frames to whichever sink is current, about 20 per second, until stopped."""

    def __init__(self) -> None:
        self.sink: PreviewSink | None = None
        self.paused = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        index = 0
        while not self._stop.wait(0.05):
            sink = self.sink
            if sink is None or self.paused.is_set():
                continue
            index += 1
            try:
                sink.send(np.full((HEIGHT, WIDTH, 3), index % 256, np.uint8))
            except Exception:  # a sink closed between the read and the send
                continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def feeder() -> Iterator[Feeder]:
    feeder = Feeder()
    yield feeder
    feeder.stop()


@pytest.mark.parametrize("path", ["/view", "/"])
def test_the_page_shows_camera_stopped_and_recovers_by_itself(feeder: Feeder, path: str) -> None:
    sink = PreviewSink(port=0)
    sink.open(WIDTH, HEIGHT, 20)
    port = sink.port
    feeder.sink = sink
    try:
        with Chromium() as browser:
            browser.open(f"http://127.0.0.1:{port}{path}")
            browser.wait_for("Number(document.body.dataset.frames) > 5", what="frames on the page")
            browser.evaluate("window.sameDocument = true")
            stopped_card = "getComputedStyle(document.getElementById('stopped')).display"
            assert browser.evaluate(stopped_card) == "none"

            # 1. the server stays up but sends nothing (a hung camera): the page notices by itself
            feeder.paused.set()
            browser.wait_for("document.body.dataset.stream === 'stopped'", what="the page to notice the stall")
            assert browser.evaluate(stopped_card) == "flex"
            frames = browser.evaluate("Number(document.body.dataset.frames)")
            feeder.paused.clear()
            browser.wait_for(f"Number(document.body.dataset.frames) > {frames + 5}", what="frames after the stall")
            assert browser.evaluate("document.body.dataset.stream") == "live"

            # 2. vcam stops, then starts again on the same port
            feeder.sink = None
            sink.close()
            browser.wait_for("document.body.dataset.stream === 'stopped'", what="the page to notice the stop")
            assert "Camera stopped" in browser.evaluate("document.getElementById('stopped').innerText")
            if path == "/":
                browser.wait_for("document.getElementById('state').textContent === 'camera stopped'")
            time.sleep(1.0)  # a few failed reconnects while nothing listens
            sink = PreviewSink(port=port)
            sink.open(WIDTH, HEIGHT, 20)
            frames = browser.evaluate("Number(document.body.dataset.frames)")
            feeder.sink = sink
            browser.wait_for(f"Number(document.body.dataset.frames) > {frames + 5}", timeout=30, what="frames again")
            assert browser.evaluate("document.body.dataset.stream") == "live"
            assert browser.evaluate("window.sameDocument === true")  # no reload
            assert browser.evaluate(stopped_card) == "none"
    finally:
        feeder.sink = None
        sink.close()


def test_the_page_shows_the_latency_line_from_the_status(feeder: Feeder) -> None:
    from vcam.status import Status

    status = Status(
        state="running",
        fps_out=30.0,
        fps_content=14.6,
        latency_ms_p50=183.0,
        latency_stages_ms={"queue": 5.0, "segment": 8.0, "translate": 150.0, "composite": 4.0, "send_wait": 16.0},
        audio_delay_ms=180,
        profile="auto",
        profile_settings="t1-448x256-taesd",
    )
    sink = PreviewSink(port=0)
    sink.bind_status(status.to_dict)
    sink.open(WIDTH, HEIGHT, 20)
    feeder.sink = sink
    try:
        with Chromium() as browser:
            browser.open(f"http://127.0.0.1:{sink.port}/")
            browser.wait_for("document.getElementById('latency-line').textContent.includes('ms late')")
            text = browser.evaluate("document.getElementById('latency-line').textContent")
    finally:
        feeder.sink = None
        sink.close()
    assert text == (
        "14.6 new styled fps of 30 · 183 ms late (queue 5, segment 8, translate 150, composite 4, send wait 16 ms)"
        " · delay your audio by 180 ms (OBS: Advanced Audio Properties, Sync Offset) · profile auto: t1-448x256-taesd"
    )
