"""The preview sink: an MJPEG stream and a small status page over HTTP on 127.0.0.1.

Routes: `/` the page (video plus live status), `/view` or `/?bare=1` the video alone, full size (an OBS
Browser Source), `/stream.mjpg` the stream (multipart/x-mixed-replace, also an OBS Media Source or
VLC input), `/frame.jpg` one snapshot, `/status.json` the runtime's status.

Privacy: the server binds to a loopback address only and answers only requests whose Host header
names this computer (127.0.0.1, localhost, [::1]), so a web page cannot reach it by DNS rebinding.

Cost: `send()` copies the frame and wakes an encoder thread; that thread JPEG-encodes each new frame
once, and only while someone watches; every client gets the newest JPEG, a slow client skips frames.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import numpy as np

from vcam.errors import SinkError
from vcam.sinks.base import Sink, StatusProvider

logger = logging.getLogger(__name__)

BOUNDARY = "vcamframe"
#: Host header names the server answers to (with or without a port)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def is_local_host_header(host: str | None) -> bool:
    """Whether a Host header names this computer: 127.0.0.1, localhost or [::1], with an optional port."""
    if not host:
        return False
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host.partition("]")
        name += "]"
        port = rest[1:] if rest.startswith(":") else rest
        if rest and not rest.startswith(":"):
            return False
    else:
        name, _, port = host.partition(":")
    if port and not port.isdigit():
        return False
    return name in LOCAL_HOSTS


def _load_page(bare: bool) -> bytes:
    page = resources.files("vcam.sinks").joinpath("preview_page.html").read_text(encoding="utf-8")
    if bare:
        page = page.replace("<body>", '<body class="bare">', 1)
    return page.encode("utf-8")


class PreviewServer(ThreadingHTTPServer):
    """The HTTP server of one `PreviewSink`; one daemon thread per request."""

    daemon_threads = True
    # SO_REUSEADDR on Windows lets a second server take a port that is in use: only set it elsewhere
    allow_reuse_address = sys.platform != "win32"

    def __init__(self, address: tuple[str, int], sink: PreviewSink) -> None:
        self.sink = sink
        self.request_threads: list[threading.Thread] = []  # socketserver does not track daemon threads
        self._request_threads_lock = threading.Lock()
        super().__init__(address, PreviewRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), name="vcam-preview-request"
        )
        thread.daemon = True
        with self._request_threads_lock:
            self.request_threads = [t for t in self.request_threads if t.is_alive()]
            self.request_threads.append(thread)
        thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception("preview: request from %s failed", client_address)

    def join_request_threads(self, timeout: float) -> None:
        """Wait up to `timeout` seconds in all for the request threads to end."""
        deadline = time.monotonic() + timeout
        with self._request_threads_lock:
            threads = list(self.request_threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning("preview: a request thread did not end within %.1f s", timeout)


class PreviewRequestHandler(BaseHTTPRequestHandler):
    """Serves the page, the stream, a snapshot and the status; refuses non-local Host headers."""

    server_version = "vcam-preview"
    timeout = 30  # seconds a socket read or write may block (a stalled client)

    @property
    def sink(self) -> PreviewSink:
        return cast(PreviewServer, self.server).sink

    def setup(self) -> None:
        super().setup()
        self.sink._track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            logger.debug("preview: client went away while finishing")
        finally:
            self.sink._track_connection(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("preview %s: " + format, self.address_string(), *args)

    def _send_body(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        host = self.headers.get("Host")
        if not is_local_host_header(host):
            logger.warning("preview: refused a request for Host %r (only 127.0.0.1/localhost are served)", host)
            self._send_body(HTTPStatus.FORBIDDEN, "text/plain; charset=utf-8", b"forbidden: non-local Host header\n")
            return
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        try:
            if url.path in ("/", "/index.html"):
                bare = query.get("bare", ["0"])[0] not in ("", "0", "false")
                self._send_body(HTTPStatus.OK, "text/html; charset=utf-8", _load_page(bare))
            elif url.path == "/view":
                self._send_body(HTTPStatus.OK, "text/html; charset=utf-8", _load_page(True))
            elif url.path == "/stream.mjpg":
                self._stream()
            elif url.path == "/frame.jpg":
                jpeg = self.sink.snapshot_jpeg()
                if jpeg is None:
                    self._send_body(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", b"no frame yet\n")
                else:
                    self._send_body(HTTPStatus.OK, "image/jpeg", jpeg)
            elif url.path == "/status.json":
                body = json.dumps(self.sink.status_dict()).encode("utf-8")
                self._send_body(HTTPStatus.OK, "application/json", body)
            else:
                self._send_body(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")
        except (ConnectionError, TimeoutError, OSError) as error:
            logger.debug("preview: client %s went away: %s", self.address_string(), error)

    def _stream(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store, no-cache, must-revalidate")
        self.send_header("Pragma", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for jpeg in self.sink._jpeg_stream():
            header = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
            self.wfile.write(header.encode("ascii") + jpeg + b"\r\n")
            self.wfile.flush()


class PreviewSink(Sink):
    """An MJPEG preview on `http://127.0.0.1:PORT/` (port 0 picks a free port; see `url` after `open`)."""

    def __init__(self, port: int = 8765, host: str = "127.0.0.1", quality: int = 80) -> None:
        if not 0 <= port <= 65535:
            raise SinkError(f"preview port must be 0..65535, got {port}; choose one with --sink preview:PORT")
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
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._server: PreviewServer | None = None
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        """The page's address (the stream is `url + "stream.mjpg"`)."""
        return f"http://{self.host}:{self.port}/"

    def bind_status(self, provider: StatusProvider) -> None:
        self._provider = provider

    def open(self, width: int, height: int, fps: float) -> None:
        try:
            server = PreviewServer((self.host, self.port), self)
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
        self.port = int(server.server_address[1])
        self._size = (width, height)
        self._fps = fps
        self.description = f"preview {self.url}"
        self._threads = [
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="vcam-preview-http"),
            threading.Thread(target=self._encode_loop, name="vcam-preview-encoder"),
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()
        logger.info("preview at %s (stream: %sstream.mjpg)", self.url, self.url)

    def send(self, image: np.ndarray) -> None:
        """Keep a copy of the newest frame and wake the encoder; never waits for clients."""
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
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()  # returns once serve_forever has stopped accepting
            with self._connections_lock:
                connections = list(self._connections)
            for connection in connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)  # unblocks a handler stuck writing to a slow client
                except OSError:
                    logger.debug("preview: connection already closed")
            server.server_close()
            server.join_request_threads(timeout=5.0)
        for thread in self._threads:
            thread.join()
        self._threads = []

    # used by the request handlers
    def _track_connection(self, connection: socket.socket, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

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
                "frames_received": self.frames_received,
                "frames_encoded": self.frames_encoded,
                "width": width,
                "height": height,
                "fps": self._fps,
            }
        return status
