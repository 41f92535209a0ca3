"""A real browser against `vcam serve`: headless Chromium's fake camera published from the server's page.

Chromium leaves loopback out of its ICE candidates (it gathers none at all on a machine whose only interface
is loopback, checked in an `unshare -rn` namespace); `--allow-loopback-in-peer-connection` puts 127.0.0.1
back, and the server (on loopback) offers 127.0.0.1 too, so the test works with or without a network. The
camera permission (`--use-fake-ui-for-media-stream`) also makes Chromium show its real addresses instead of
mDNS `.local` names, which aiortc could not resolve.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chromium import CHROMIUM, Chromium
from tests.serve_process import TOKEN, ServerProcess, free_port

pytest.importorskip("aiortc")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)"
)

BROWSER_FLAGS = (
    "--use-fake-device-for-media-stream",  # a synthetic camera (a moving pattern)
    "--use-fake-ui-for-media-stream",  # grant the camera without a prompt
    "--allow-loopback-in-peer-connection",  # ICE host candidates on 127.0.0.1
)

#: mean absolute difference (0-255) between the page's camera and its styled video, both drawn at 64x36
MEAN_DIFFERENCE_JS = """
(() => {
  const canvas = document.createElement("canvas");
  canvas.width = 64; canvas.height = 36;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  const pixels = (id) => {
    context.drawImage(document.getElementById(id), 0, 0, 64, 36);
    return context.getImageData(0, 0, 64, 36).data;
  };
  const local = pixels("local"), styled = pixels("styled");
  let total = 0, count = 0;
  for (let i = 0; i < local.length; i += 4) {
    for (let c = 0; c < 3; c += 1) { total += Math.abs(local[i + c] - styled[i + c]); count += 1; }
  }
  return total / count;
})()
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    running = ServerProcess(tmp_path, free_port())
    yield running
    running.stop()


def test_chromium_publishes_its_camera_from_the_page_and_receives_styled_frames(server: ServerProcess) -> None:
    with Chromium(BROWSER_FLAGS) as browser:
        browser.open(f"{server.url}/#token={TOKEN}&autostart=1")
        browser.wait_for("window.vcam.candidates !== undefined", timeout=60, what="the page's ICE gathering")
        candidates = browser.evaluate("window.vcam.candidates")
        assert candidates > 0, "chromium gathered no ICE candidate"
        browser.wait_for("window.vcam.framesReceived > 30", timeout=120, what="30 styled frames in the page")
        assert browser.evaluate("window.vcam.error") is None
        assert browser.evaluate("window.vcam.state") == "connected"
        status = browser.wait_for(
            "window.vcam.status && window.vcam.status.frames_out > 30 && window.vcam.status",
            timeout=30,
            what="the server's status message counting 30 frames out",
        )
        assert status["style"] == "tiny-random" and status["error"] is None and status["clients"] == 1
        width = browser.evaluate("document.getElementById('styled').videoWidth")
        assert width == browser.evaluate("document.getElementById('local').videoWidth") > 0  # the camera's size
        assert browser.evaluate(MEAN_DIFFERENCE_JS) > 30  # the camera itself sent back: 3 to 12 (its pattern moves)
        browser.evaluate("document.getElementById('stop').click()")
        browser.wait_for("window.vcam.stopped", timeout=30, what="the page to stop")
    assert server.process.poll() is None
