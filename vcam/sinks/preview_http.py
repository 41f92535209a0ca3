"""The preview's HTTP server: a small GET-only HTTP/1.1 server for 127.0.0.1 that holds up and stays private.

Holding up:
- the listening socket's backlog is LISTEN_BACKLOG, so a burst of connects is queued by the kernel;
- one reader thread reads the request heads of every new connection at once; a client gets HEADER_TIMEOUT_S
  to send its whole request head (at most MAX_HEADER_BYTES, else 431) and its body (POST, for the control API:
  at most MAX_BODY_BYTES with a Content-Length, else 413 / 411), so half-open connections cost a socket each
  for a bounded time, never a thread (at most MAX_PENDING of them wait, the rest wait in the backlog);
- REQUEST_WORKERS threads (a fixed number) answer complete requests;
- a stream (MJPEG, MPEG-TS) runs in a thread of its own, at most MAX_STREAMS at once (503 beyond), and a
  write may block at most WRITE_TIMEOUT_S (a client that stopped reading is dropped).

Methods: GET, HEAD and POST reach the router, which answers 405 where a method does not apply.

Privacy (`refusal`): only requests whose Host header names this computer (DNS rebinding), whose request line,
if it is an absolute URI, names this computer too, and whose `Sec-Fetch-Site` is absent (ffmpeg, OBS's Media
Source, curl), `none` (typed in the address bar, OBS's Browser source) or `same-origin` (the page's own
requests). Every answer carries `Cross-Origin-Resource-Policy: same-origin`, so no other site can embed the
camera in an <img> or <video>; pages also carry `frame-ancestors 'self'`, so no other site can frame them.
A client that goes away while being answered is logged at debug level.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger(__name__)

LISTEN_BACKLOG = 128
REQUEST_WORKERS = 8
MAX_PENDING = 1024
MAX_STREAMS = 64
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
#: the methods the router is asked about (others get 405 from the server)
METHODS = ("GET", "HEAD", "POST")
HEADER_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 30.0

#: Host header names the server answers to (with or without a port)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
#: Sec-Fetch-Site values accepted (an absent header is accepted too)
ALLOWED_FETCH_SITES = ("none", "same-origin")
#: headers on every answer
COMMON_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Connection", "close"),
)
#: headers on HTML pages: only this server's own pages may frame them
PAGE_HEADERS = (("Content-Security-Policy", "frame-ancestors 'self'"), ("X-Frame-Options", "SAMEORIGIN"))

TEXT = "text/plain; charset=utf-8"


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


@dataclass(frozen=True)
class Request:
    """One parsed request head. Header names are lower case."""

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Body:
    """A complete answer."""

    status: HTTPStatus
    content_type: str
    body: bytes
    page: bool = False  # an HTML page: also send PAGE_HEADERS


@dataclass
class Stream:
    """An endless answer: `chunks` is iterated in a stream thread until it ends or the client goes away."""

    content_type: str
    chunks: Iterator[bytes]
    extra_headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


Answer = Body | Stream
#: turns a request that passed `refusal` into an answer
Router = Callable[[Request], Answer]


class BadRequest(Exception):
    """A request head that cannot be answered; carries the status to send."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def refusal(request: Request) -> str | None:
    """Why a request is refused (403), or None when it may be served."""
    host = request.headers.get("host")
    if not is_local_host_header(host):
        return f"non-local Host header {host!r}"
    if "://" in request.target.split("?", 1)[0]:
        named = urlsplit(request.target).netloc
        if not is_local_host_header(named):
            return f"absolute request URI naming {named!r}"
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in ALLOWED_FETCH_SITES:
        return f"Sec-Fetch-Site {site!r} (only the server's own pages may use it)"
    return None


def body_length(request: Request) -> int:
    """The length of the body that follows `request`'s head (0 without one); raises BadRequest when it cannot
    be read: chunked (411) or over MAX_BODY_BYTES (413)."""
    if "transfer-encoding" in request.headers:
        raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "a request body needs a Content-Length (not chunked)")
    text = request.headers.get("content-length", "0").strip()
    if not text.isdigit():
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"bad Content-Length {text[:20]!r}")
    length = int(text)
    if length > MAX_BODY_BYTES:
        raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {MAX_BODY_BYTES // 1024} KB")
    return length


def parse_request(head: bytes) -> Request:
    """Parse a request head (the bytes before the blank line); raises BadRequest."""
    if len(head) > MAX_HEADER_BYTES:
        raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head over 16 KB")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"bad request line {lines[0][:80]!r}")
    method, target, _ = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"bad header line {line[:80]!r}")
        headers[name.lower()] = value.strip()
    url = urlsplit(target)
    return Request(method, target, url.path, parse_qs(url.query), headers)


@dataclass
class _Incoming:
    """A connection whose request head is still arriving."""

    connection: socket.socket
    deadline: float
    buffer: bytes = b""


def _head(status: HTTPStatus, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status.value} {status.phrase}", "Server: vcam-preview"]
    lines += [f"{name}: {value}" for name, value in (*COMMON_HEADERS, *headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def send_body(connection: socket.socket, answer: Body, head_only: bool = False) -> None:
    headers = [("Content-Type", answer.content_type), ("Content-Length", str(len(answer.body)))]
    if answer.page:
        headers += PAGE_HEADERS
    connection.settimeout(WRITE_TIMEOUT_S)
    connection.sendall(_head(answer.status, headers) + (b"" if head_only else answer.body))


class PreviewHttpServer:
    """Serves `router`'s answers on host:port (see the module docstring); `start()` then `close()`.

    One reader thread accepts connections and reads request heads from all of them at once (non-blocking
    sockets and a selector), so a client that connects and sends nothing costs a socket, not a thread;
    complete heads go to REQUEST_WORKERS worker threads; streams get a thread each, at most MAX_STREAMS.
    """

    def __init__(self, host: str, port: int, router: Router) -> None:
        self._router = router
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if sys.platform != "win32":  # SO_REUSEADDR on Windows lets a second server take a port in use
                self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(LISTEN_BACKLOG)
            self._listener.setblocking(False)
        except OSError:
            self._listener.close()
            raise
        self._address: tuple[str, int] = self._listener.getsockname()[:2]
        self.port = int(self._address[1])
        self._ready: queue.Queue[tuple[socket.socket, Request | BadRequest] | None] = queue.Queue(MAX_PENDING)
        self._closing = threading.Event()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._streams: set[threading.Thread] = set()
        self._threads: list[threading.Thread] = []

    @property
    def server_address(self) -> tuple[str, int]:
        """The (host, port) the server listens on."""
        return self._address

    @property
    def stream_threads(self) -> int:
        with self._lock:
            return len(self._streams)

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._read_loop, name="vcam-preview-reader", daemon=True)]
        self._threads += [
            threading.Thread(target=self._work_loop, name=f"vcam-preview-worker-{index}", daemon=True)
            for index in range(REQUEST_WORKERS)
        ]
        for thread in self._threads:
            thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, cut every connection (a stalled client included) and join every thread."""
        self._closing.set()
        with contextlib.suppress(OSError):  # the reader may have gone already
            self._wake_writer.send(b"x")
        with self._lock:
            connections = list(self._connections)
            streams = list(self._streams)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)  # unblocks a thread stuck writing to a stalled client
            except OSError:
                logger.debug("preview: connection already closed")
        for _ in range(REQUEST_WORKERS):
            try:
                self._ready.put_nowait(None)
            except queue.Full:
                break
        deadline = time.monotonic() + timeout
        for thread in [*self._threads, *streams]:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning("preview: thread %s did not end within %.1f s", thread.name, timeout)
        while True:  # requests read but never answered
            try:
                leftover = self._ready.get_nowait()
            except queue.Empty:
                break
            if leftover is not None:
                leftover[0].close()
        self._listener.close()
        self._wake_reader.close()
        self._wake_writer.close()

    # ------------------------------------------------------------------ threads
    def _read_loop(self) -> None:
        """Accept connections and read their request heads; hand each complete head to the workers."""
        import selectors

        incoming: dict[socket.socket, _Incoming] = {}
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            try:
                while not self._closing.is_set():
                    for key, _ in selector.select(timeout=0.5):
                        if key.fileobj is self._listener:
                            self._accept(selector, incoming)
                        elif key.fileobj is not self._wake_reader:
                            self._receive(selector, incoming, incoming[cast(socket.socket, key.fileobj)])
                    now = time.monotonic()
                    for entry in [entry for entry in incoming.values() if entry.deadline <= now]:
                        logger.debug("preview: a client sent no complete request within %.0f s", HEADER_TIMEOUT_S)
                        self._drop(selector, incoming, entry)
            finally:
                for entry in list(incoming.values()):
                    self._drop(selector, incoming, entry)

    def _accept(self, selector: Any, incoming: dict[socket.socket, _Incoming]) -> None:
        import selectors

        while len(incoming) < MAX_PENDING:
            try:
                connection, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                logger.debug("preview: accept failed: %s", error)
                return
            connection.setblocking(False)
            incoming[connection] = _Incoming(connection, time.monotonic() + HEADER_TIMEOUT_S)
            selector.register(connection, selectors.EVENT_READ)

    def _receive(self, selector: Any, incoming: dict[socket.socket, _Incoming], entry: _Incoming) -> None:
        try:
            data = entry.connection.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            logger.debug("preview: client went away: %s", error)
            data = b""
        if not data:
            self._drop(selector, incoming, entry)
            return
        entry.buffer += data
        end = entry.buffer.find(b"\r\n\r\n")
        parsed: Request | BadRequest
        if end < 0 and len(entry.buffer) <= MAX_HEADER_BYTES:
            return  # more to come
        if end < 0 or end > MAX_HEADER_BYTES:
            parsed = BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head over 16 KB")
        else:
            try:
                parsed = parse_request(entry.buffer[:end])
                length = body_length(parsed)
                if len(entry.buffer) < end + 4 + length:
                    return  # the body is still coming
                parsed = dataclasses.replace(parsed, body=entry.buffer[end + 4 : end + 4 + length])
            except BadRequest as error:
                parsed = error
        selector.unregister(entry.connection)
        del incoming[entry.connection]
        entry.connection.setblocking(True)
        try:
            self._ready.put_nowait((entry.connection, parsed))
        except queue.Full:
            logger.debug("preview: too many requests waiting; dropping one")
            entry.connection.close()

    @staticmethod
    def _drop(selector: Any, incoming: dict[socket.socket, _Incoming], entry: _Incoming) -> None:
        selector.unregister(entry.connection)
        del incoming[entry.connection]
        entry.connection.close()

    def _work_loop(self) -> None:
        while True:
            item = self._ready.get()
            if item is None:
                return
            connection, parsed = item
            if self._closing.is_set():
                connection.close()
                continue
            self._track(connection, True)
            handed_off = False
            try:
                handed_off = self._serve(connection, parsed)
            except OSError as error:
                logger.debug("preview: client went away: %s", error)
            except Exception:
                logger.exception("preview: answering a request failed")
            finally:
                if not handed_off:
                    self._track(connection, False)
                    connection.close()

    def _serve(self, connection: socket.socket, request: Request | BadRequest) -> bool:
        """Answer one request; True when the connection was handed to a stream thread."""
        if isinstance(request, BadRequest):
            logger.debug("preview: bad request: %s", request)
            send_body(connection, Body(request.status, TEXT, f"{request}\n".encode()))
            _drain(connection)
            return False
        if request.method not in METHODS:
            send_body(connection, Body(HTTPStatus.METHOD_NOT_ALLOWED, TEXT, b"only GET and POST are served\n"))
            return False
        why = refusal(request)
        if why is not None:
            logger.warning("preview: refused a request for %s: %s", request.path, why)
            send_body(connection, Body(HTTPStatus.FORBIDDEN, TEXT, f"forbidden: {why}\n".encode()))
            return False
        answer = self._router(request)
        if isinstance(answer, Body):
            send_body(connection, answer, head_only=request.method == "HEAD")
            return False
        thread = threading.Thread(target=self._stream, args=(connection, answer), name="vcam-preview-stream")
        thread.daemon = True
        with self._lock:
            full = len(self._streams) >= MAX_STREAMS
            if not full:
                self._streams.add(thread)
        if full:
            _close_chunks(answer)
            send_body(connection, Body(HTTPStatus.SERVICE_UNAVAILABLE, TEXT, b"too many streams open\n"))
            return False
        thread.start()
        return True

    def _stream(self, connection: socket.socket, answer: Stream) -> None:
        try:
            connection.settimeout(WRITE_TIMEOUT_S)
            connection.sendall(_head(HTTPStatus.OK, [("Content-Type", answer.content_type), *answer.extra_headers]))
            for chunk in answer.chunks:
                connection.sendall(chunk)
        except OSError as error:
            logger.debug("preview: stream client went away: %s", error)
        except Exception:
            logger.exception("preview: a stream failed")
        finally:
            _close_chunks(answer)  # runs the generator's cleanup (client counts) now, not at garbage collection
            self._track(connection, False)
            connection.close()
            with self._lock:
                self._streams.discard(threading.current_thread())

    def _track(self, connection: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


def _drain(connection: socket.socket, limit: int = 1 << 20, timeout: float = 2.0) -> None:
    """Close gracefully a connection whose client may still be sending (a refused head): stop writing, read and
    drop what still comes (at most `limit` bytes for `timeout` seconds), so the answer is not lost to a reset."""
    connection.shutdown(socket.SHUT_WR)
    connection.settimeout(timeout)
    deadline = time.monotonic() + timeout
    received = 0
    with contextlib.suppress(OSError):
        while received < limit and time.monotonic() < deadline:
            chunk = connection.recv(65536)
            if not chunk:
                return
            received += len(chunk)


def _close_chunks(answer: Stream) -> None:
    close = getattr(answer.chunks, "close", None)
    if callable(close):
        close()
