"""The preview sink: an MJPEG stream, an MPEG-TS stream and a small status page over HTTP on 127.0.0.1.

Routes: `/` the page (video plus live status), `/view` or `/?bare=1` the video alone, full size (an OBS
Browser source), `/stream.mjpg` the MJPEG stream (multipart/x-mixed-replace: the page's <img>),
`/stream.ts` H.264 in MPEG-TS with real timestamps (OBS's Media Source, ffplay, VLC; see `preview_ts`),
`/frame.jpg` one snapshot, `/status.json` the runtime's status plus the preview's own numbers, and `/api/...`
the run's control API when one is attached (`attach_control`; the page then carries its token).

Privacy and robustness: the server (`preview_http`) binds to a loopback address only, answers only requests
for this computer that no other site made, and bounds its threads and the time and size of a request.

Cost: `send()` copies the frame and wakes the encoders; the JPEG encoder thread encodes each new frame once,
and only while someone watches; every MJPEG client gets the newest JPEG, a slow client skips frames. The
H.264 encoder likewise runs once for all `/stream.ts` clients.
"""

from __future__ import annotations

import errno
import json
import logging
import threading
from collections.abc import Iterator
from http import HTTPStatus
from importlib import resources
from typing import Any

import numpy as np

from vcam.config import preview_port_problem
from vcam.errors import SinkError
from vcam.sinks.base import Sink, StatusProvider
from vcam.sinks.preview_http import (
    TEXT,
    Answer,
    Body,
    PreviewHttpServer,
    Request,
    Router,
    Stream,
    is_local_host_header,
)
from vcam.sinks.preview_ts import CONTENT_TYPE as TS_CONTENT_TYPE
from vcam.sinks.preview_ts import TsBroadcaster

logger = logging.getLogger(__name__)

__all__ = ["PreviewSink", "is_local_host_header"]

BOUNDARY = "vcamframe"


#: the page's placeholder for the control API's token (empty: no control panel)
TOKEN_META = '<meta name="vcam-token" content="">'


def _load_page(bare: bool, token: str = "") -> bytes:
    import html

    page = resources.files("vcam.sinks").joinpath("preview_page.html").read_text(encoding="utf-8")
    if bare:
        page = page.replace("<body>", '<body class="bare">', 1)
    elif token:
        page = page.replace(TOKEN_META, f'<meta name="vcam-token" content="{html.escape(token)}">', 1)
    return page.encode("utf-8")


class PreviewSink(Sink):
    """An MJPEG preview on `http://127.0.0.1:PORT/` (port 0 picks a free port; see `url` after `open`)."""

    def __init__(self, port: int = 8765, host: str = "127.0.0.1", quality: int = 80) -> None:
        problem = preview_port_problem(port)
        if problem is not None:
            raise SinkError(f"preview port {port}: {problem}; choose one with --sink preview:PORT")
        if not host.startswith("127."):
            raise SinkError(f"the preview binds to a loopback address (127.x.x.x) only, got host {host!r}")
        if not 1 <= quality <= 100:
            raise SinkError(f"preview JPEG quality must be 1..100, got {quality}")
        self.port = port
        self.host = host
        self.quality = quality
        self.description = f"preview (port {port})"
        self.frames_received = 0
        self.frames_encoded = 0
        self._size: tuple[int, int] = (0, 0)
        self._fps = 0.0
        self._provider: StatusProvider | None = None
        self._condition = threading.Condition()
        self._image: np.ndarray | None = None  # the newest frame, RGB
        self._image_seq = 0  # counts send() calls
        self._jpeg: bytes | None = None  # the newest JPEG and the frame it encodes
        self._jpeg_seq = 0
        self._stream_clients = 0
        self._closing = False
        self._server: PreviewHttpServer | None = None
        self._ts: TsBroadcaster | None = None
        self._threads: list[threading.Thread] = []
        self._control: Router | None = None
        self._control_token = ""

    def attach_control(self, router: Router, token: str) -> None:
        """Serve the run's control API under /api/ with `router`; the page gets `token` embedded (its panel)."""
        self._control = router
        self._control_token = token

    @property
    def url(self) -> str:
        """The page's address (the stream is `url + "stream.mjpg"`)."""
        return f"http://{self.host}:{self.port}/"

    def bind_status(self, provider: StatusProvider) -> None:
        self._provider = provider

    def open(self, width: int, height: int, fps: float) -> None:
        try:
            server = PreviewHttpServer(self.host, self.port, self._route)
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, 10048):  # 10048: WSAEADDRINUSE
                raise SinkError(
                    f"preview port {self.port} on {self.host} is already in use (another program or another vcam). "
                    "Choose another port: `--sink preview:PORT` or `port = PORT` under [preview] in the config."
                ) from error
            raise SinkError(
                f"cannot serve the preview on {self.host}:{self.port}: {error}. "
                "Choose another port: `--sink preview:PORT` or `port = PORT` under [preview] in the config."
            ) from error
        self._server = server
        self.port = server.port
        self._size = (width, height)
        self._fps = fps
        self._ts = TsBroadcaster(width, height, fps, self._latest_image, self._wait_newer)
        self.description = f"preview {self.url}"
        self._threads = [threading.Thread(target=self._encode_loop, name="vcam-preview-encoder", daemon=True)]
        for thread in self._threads:
            thread.start()
        server.start()
        logger.info("preview at %s (streams: %sstream.mjpg, %sstream.ts)", self.url, self.url, self.url)

    def send(self, image: np.ndarray) -> None:
        """Keep a copy of the newest frame and wake the encoders; never waits for clients."""
        width, height = self._size
        if image.shape != (height, width, 3) or image.dtype != np.uint8:
            raise ValueError(f"unexpected frame: {image.shape} {image.dtype} != {(height, width, 3)} uint8")
        copy = image.copy()
        with self._condition:
            self._image = copy
            self._image_seq += 1
            self.frames_received += 1
            self._condition.notify_all()

    def close(self) -> None:
        """Stop the server, end every stream and join every thread."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        if self._ts is not None:
            self._ts.close()
        server, self._server = self._server, None
        if server is not None:
            server.close(timeout=5.0)
        for thread in self._threads:
            thread.join()
        self._threads = []

    # ------------------------------------------------------------------ requests
    def _route(self, request: Request) -> Answer:
        """The answer to a request the server accepted (local, same-origin)."""
        path = request.path
        if "://" in request.target.split("?", 1)[0]:  # an absolute URI naming this computer
            path = path or "/"
        if path.startswith("/api/") and self._control is not None:
            return self._control(request)
        if request.method == "POST":
            return Body(HTTPStatus.METHOD_NOT_ALLOWED, TEXT, b"only GET is served here\n")
        if path in ("/", "/index.html"):
            bare = request.query.get("bare", ["0"])[0] not in ("", "0", "false")
            page = _load_page(bare, self._control_token)
            return Body(HTTPStatus.OK, "text/html; charset=utf-8", page, page=True)
        if path == "/view":
            return Body(HTTPStatus.OK, "text/html; charset=utf-8", _load_page(True), page=True)
        if path == "/stream.mjpg":
            return Stream(
                f"multipart/x-mixed-replace; boundary={BOUNDARY}", self._mjpeg_parts(), (("Pragma", "no-cache"),)
            )
        if path == "/stream.ts":
            if self._ts is None:
                return Body(HTTPStatus.SERVICE_UNAVAILABLE, TEXT, b"not started\n")
            return Stream(TS_CONTENT_TYPE, self._ts.stream())
        if path == "/frame.jpg":
            jpeg = self.snapshot_jpeg()
            if jpeg is None:
                return Body(HTTPStatus.SERVICE_UNAVAILABLE, TEXT, b"no frame yet\n")
            return Body(HTTPStatus.OK, "image/jpeg", jpeg)
        if path == "/status.json":
            return Body(HTTPStatus.OK, "application/json", json.dumps(self.status_dict()).encode("utf-8"))
        return Body(HTTPStatus.NOT_FOUND, TEXT, b"not found\n")

    def _mjpeg_parts(self) -> Iterator[bytes]:
        for jpeg in self._jpeg_stream():
            header = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
            yield header.encode("ascii") + jpeg + b"\r\n"

    # ------------------------------------------------------------------ the TS encoder's view of the frames
    def _latest_image(self) -> tuple[np.ndarray, int] | None:
        with self._condition:
            if self._image is None:
                return None
            return self._image, self._image_seq

    def _wait_newer(self, seq: int, timeout: float) -> bool:
        """Wait until a frame newer than `seq` was sent; False on timeout or when the sink closes."""
        with self._condition:
            self._condition.wait_for(lambda: self._closing or self._image_seq > seq, timeout=timeout)
            return not self._closing and self._image_seq > seq

    def _encode(self, image: np.ndarray) -> bytes:
        import cv2

        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for a frame of shape {image.shape}")
        return encoded.tobytes()

    def _encode_loop(self) -> None:
        """Encode each new frame once while a stream client is connected."""
        while True:
            with self._condition:
                self._condition.wait_for(
                    lambda: self._closing or (self._stream_clients > 0 and self._image_seq != self._jpeg_seq)
                )
                if self._closing:
                    return
                image, seq = self._image, self._image_seq
            if image is None:
                continue
            try:
                jpeg = self._encode(image)
            except Exception:  # one bad frame must not end the stream for every client
                logger.exception("preview: JPEG encoding failed; skipping frame %d", seq)
                with self._condition:
                    self._jpeg_seq = max(self._jpeg_seq, seq)
                continue
            with self._condition:
                if seq > self._jpeg_seq:
                    self._jpeg, self._jpeg_seq = jpeg, seq
                    self.frames_encoded += 1
                self._condition.notify_all()

    def _jpeg_stream(self) -> Iterator[bytes]:
        """Yield the newest JPEG each time there is a new one, until the sink closes."""
        with self._condition:
            self._stream_clients += 1
            self._condition.notify_all()
        try:
            last_seq = 0
            while True:
                with self._condition:
                    if not self._closing and self._jpeg_seq == last_seq:
                        self._condition.wait(timeout=1.0)
                    if self._closing:
                        return
                    if self._jpeg is None or self._jpeg_seq == last_seq:
                        continue
                    jpeg, last_seq = self._jpeg, self._jpeg_seq
                yield jpeg
        finally:
            with self._condition:
                self._stream_clients -= 1

    def snapshot_jpeg(self) -> bytes | None:
        """The newest frame as JPEG (encoded here if the encoder has not done it yet), or None before any."""
        with self._condition:
            image, seq = self._image, self._image_seq
            if self._jpeg is not None and self._jpeg_seq == seq:
                return self._jpeg
        if image is None:
            return None
        jpeg = self._encode(image)
        with self._condition:
            if seq > self._jpeg_seq:
                self._jpeg, self._jpeg_seq = jpeg, seq
                self.frames_encoded += 1
        return jpeg

    def status_dict(self) -> dict[str, Any]:
        """The runtime's status (when bound) plus this preview's own numbers."""
        status: dict[str, Any]
        if self._provider is not None:
            try:
                status = dict(self._provider())
            except Exception as error:  # a status read must never break the page
                logger.exception("preview: reading the runtime status failed")
                status = {"state": "error", "last_error": f"status unavailable: {error}"}
        else:
            status = {"state": "running" if self.frames_received else "starting", "frames_out": self.frames_received}
        width, height = self._size
        with self._condition:
            status["preview"] = {
                "url": self.url,
                "stream_clients": self._stream_clients,
                "ts_clients": self._ts.clients if self._ts is not None else 0,
                "ts_frames_encoded": self._ts.frames_encoded if self._ts is not None else 0,
                "frames_received": self.frames_received,
                "frames_encoded": self.frames_encoded,
                "width": width,
                "height": height,
                "fps": self._fps,
            }
        return status
