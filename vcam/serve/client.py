"""The laptop side of remote mode: one WebRTC connection to `vcam serve`, kept up with backoff.

`RemoteConnection` runs its own asyncio loop thread (aiortc). `send(image, pts)` queues a camera frame (the
oldest waiting one is dropped), `take()` returns the newest styled frame received since the last call, with
the pts of the camera frame it styles. Nothing blocks the caller: when the server cannot be reached or the
connection drops, `problem` says why and the connection is retried after 1, 2, 4, ... 30 s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import numpy as np

from vcam.serve.rtc import FrameQueueTrack, frame_to_rgb, rtc_configuration

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
#: seconds without a styled frame before a connection counts as dropped (the first may take a style load)
STALL_TIMEOUT_S = 5.0
FIRST_STYLED_FRAME_TIMEOUT_S = 120.0
HTTP_TIMEOUT_S = 150.0
UNAVAILABLE = "remote style unavailable"


class RemoteConnection:
    """A self-healing connection to `url` (http(s)://HOST:PORT of `vcam serve`)."""

    def __init__(
        self,
        url: str,
        token: str,
        style: str,
        ice_servers: list[str] | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.style = style
        self.ice_servers = list(ice_servers or [])
        self.ca_file = ca_file or None
        self.problem: str | None = "connecting"
        self.connected = False
        self.server_status: dict[str, Any] = {}
        self.server_error: str | None = None  # the last error message the server sent on the data channel
        self.connects = 0
        self._lock = threading.Lock()
        self._newest: tuple[np.ndarray, int] | None = None
        self._stop = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._track: Any = None
        self._first_pts: int | None = None  # the pts of the first frame sent on this connection
        self._last_frame_time = 0.0
        self._thread = threading.Thread(target=self._run, name="vcam-remote", daemon=True)

    def start(self) -> None:
        from vcam.serve.rtc import allow_loopback_candidates, require_aiortc

        require_aiortc()
        host = urllib.parse.urlsplit(self.url).hostname or ""
        if host in ("127.0.0.1", "localhost", "::1"):
            allow_loopback_candidates()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(lambda: None)
            self._thread.join(timeout=10)

    # -- frames (any thread) ---------------------------------------------------------------------------------

    def send(self, image: np.ndarray, pts: int) -> None:
        track = self._track
        if track is not None and self.connected:
            track.put(image, pts)

    def take(self) -> tuple[np.ndarray, int] | None:
        """The newest styled frame not taken yet: (image, pts of its camera frame), or None."""
        with self._lock:
            newest, self._newest = self._newest, None
        return newest

    def control(self, message: dict[str, Any]) -> None:
        """Send a control message (style, prompt, strength, t_index_list: `vcam.serve.control`) when connected."""
        self._loop.call_soon_threadsafe(self._send_control, message)

    # -- the loop --------------------------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._keep_connected())
        finally:
            self._loop.close()

    async def _keep_connected(self) -> None:
        backoff = BACKOFF_FIRST_S
        while not self._stop.is_set():
            try:
                await self._connect_once()
                if self.connects:
                    backoff = BACKOFF_FIRST_S
                reason = "the connection to the server dropped"
            except _Refused as error:
                reason = str(error)
            except Exception as error:
                log.debug("remote connection failed", exc_info=True)
                reason = f"{type(error).__name__}: {error}"
            self.connected = False
            if self._stop.is_set():
                break
            self.problem = f"{UNAVAILABLE}: {reason}; retrying in {backoff:.0f} s"
            log.warning("%s", self.problem)
            deadline = time.monotonic() + backoff
            while time.monotonic() < deadline and not self._stop.is_set():
                await asyncio.sleep(0.1)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _connect_once(self) -> None:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        pc = RTCPeerConnection(rtc_configuration(self.ice_servers))
        resource: str | None = None
        receivers: list[asyncio.Task[None]] = []
        self._channel: Any = None
        try:
            track = FrameQueueTrack.create(self._loop)
            pc.addTrack(track)
            channel = pc.createDataChannel("control")
            channel.on("message", self._on_message)
            self._channel = channel
            ended = asyncio.Event()
            pc.on("connectionstatechange", lambda: ended.set() if pc.connectionState in ("failed", "closed") else None)

            @pc.on("track")
            def on_track(remote_track: Any) -> None:
                if remote_track.kind == "video":
                    receivers.append(asyncio.ensure_future(self._receive(remote_track, ended)))

            await pc.setLocalDescription(await pc.createOffer())
            loop = asyncio.get_running_loop()
            answer, resource = await loop.run_in_executor(None, self._post_offer, pc.localDescription.sdp)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            self._first_pts = None
            self._track = track
            self._last_frame_time = time.monotonic()
            self.connected = True
            received_before = self.connects
            while not self._stop.is_set() and not ended.is_set():
                await asyncio.sleep(0.1)
                limit = STALL_TIMEOUT_S if self.connects > received_before else FIRST_STYLED_FRAME_TIMEOUT_S
                if time.monotonic() - self._last_frame_time > limit:
                    break
        finally:
            self.connected = False
            self._track = None
            for receiver in receivers:
                receiver.cancel()
            await asyncio.gather(*receivers, return_exceptions=True)  # none left pending when the loop closes
            await pc.close()
            if resource is not None:
                await asyncio.get_running_loop().run_in_executor(None, self._delete, resource)

    async def _receive(self, remote_track: Any, ended: asyncio.Event) -> None:
        from aiortc.mediastreams import MediaStreamError

        first = True
        while not ended.is_set():
            try:
                frame = await remote_track.recv()
            except MediaStreamError:
                ended.set()
                return
            image, pts = frame_to_rgb(frame)
            sent_origin = self._track.first_pts if self._track is not None else None
            if sent_origin is None:
                continue
            with self._lock:
                self._newest = (image, pts + sent_origin)
            self._last_frame_time = time.monotonic()
            if first:
                first = False
                self.connects += 1
                self.problem = None
                log.info("remote style connected to %s", self.url)

    def _on_message(self, message: Any) -> None:
        try:
            data = json.loads(message)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        if data.get("type") == "status":
            self.server_status = data
        elif data.get("type") == "error":
            self.server_error = str(data.get("message"))
            log.warning("remote server: %s", self.server_error)

    def _send_control(self, message: dict[str, Any]) -> None:
        channel = getattr(self, "_channel", None)
        if channel is not None and channel.readyState == "open":
            channel.send(json.dumps(message))

    # -- signalling (executor threads) -----------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext | None:
        if not self.url.startswith("https:"):
            return None
        return ssl.create_default_context(cafile=self.ca_file)

    def _post_offer(self, sdp: str) -> tuple[str, str | None]:
        query = urllib.parse.urlencode({"style": self.style})
        request = urllib.request.Request(
            f"{self.url}/offer?{query}",
            data=sdp.encode("utf-8"),
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/sdp"},
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S, context=self._context()) as response:
                answer = response.read().decode("utf-8")
                return answer, response.headers.get("Location")
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace").strip()[:300]
            if error.code == 401:
                raise _Refused("the server refused the token (401): check --token / $VCAM_REMOTE_TOKEN") from None
            raise _Refused(f"the server answered {error.code}: {detail}") from None
        except urllib.error.URLError as error:
            raise _Refused(f"cannot reach {self.url}: {error.reason}") from None

    def _delete(self, resource: str) -> None:
        request = urllib.request.Request(
            urllib.parse.urljoin(self.url + "/", resource.lstrip("/")),
            method="DELETE",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5, context=self._context()):
                pass
        except (urllib.error.URLError, OSError):
            log.debug("DELETE %s failed (the server may be gone)", resource)


class _Refused(Exception):
    """The server could not be reached or refused the offer (the message says which)."""
