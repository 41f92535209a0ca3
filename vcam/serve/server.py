"""`vcam serve`'s HTTP side: signalling endpoints with token auth, the peer connections, the browser page.

Endpoints (every one but the page needs `Authorization: Bearer TOKEN`; a bad or missing token gets 401 with
no detail):
- `POST /offer`: our client (`vcam run --remote`): an SDP offer with one send-receive video track (camera up,
  styled video down) and a data channel ("control": style, prompt; status comes back every second).
- `POST /whip` (RFC 9725): publish a camera (OBS 30+); offered audio is answered inactive.
- `POST /whep/KEY`: pull the styled video of one published stream; KEY is unguessable and returned to its
  publisher only (`Link: </whep/KEY>; rel="vcam-whep"`).
- `DELETE` on a resource URL (the `Location` of a 201 answer) ends it.
- `GET /status`: the server's clients as JSON (how many, the most, the default style), for monitoring.
- `GET /`: the page that sends the browser's camera and shows it styled.

The stdlib's threading HTTP server answers requests; the peer connections live on one asyncio loop in its
own thread (aiortc's), and the engine thread styles the frames. Bodies are capped, malformed SDP gets 400.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from vcam.errors import UserError
from vcam.serve import IDLE_TIMEOUT_S
from vcam.serve.control import ControlRequest, parse_control
from vcam.serve.engine import Engine, TooManyClients
from vcam.serve.rtc import (
    MAX_SDP_BYTES,
    BadOffer,
    FrameQueueTrack,
    check_offer,
    frame_to_rgb,
    make_inactive,
    rtc_configuration,
)
from vcam.serve.streams import ClientStream, StyledFrame
from vcam.serve.token import tokens_match

log = logging.getLogger(__name__)

#: seconds a new connection may take to send its first frame
FIRST_CLIENT_FRAME_TIMEOUT_S = 30.0
#: seconds an offer may take to answer (a style that loads counts)
ANSWER_TIMEOUT_S = 300.0
STATUS_INTERVAL_S = 1.0
#: random bytes in a resource URL's key (a session, a WHEP stream): unguessable, 43 URL-safe characters
RESOURCE_KEY_BYTES = 32
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8890
    token: str = ""
    style: str = "tiny-random"
    max_clients: int = 4
    ice_servers: list[str] = field(default_factory=list)
    certfile: str | None = None
    keyfile: str | None = None
    batch: bool = True
    idle_timeout_s: float = IDLE_TIMEOUT_S


class Session:
    """One peer connection: a publishing client (its stream in the engine) or a WHEP viewer of one."""

    def __init__(self, session_id: str, pc: Any, kind: str) -> None:
        self.session_id = session_id
        self.pc = pc
        self.kind = kind  # "client" | "whip" | "whep"
        self.stream: ClientStream | None = None
        self.output_tracks: list[Any] = []  # tracks that send this session's styled frames
        self.viewers: dict[str, Session] = {}
        self.whep_key = secrets.token_urlsafe(RESOURCE_KEY_BYTES) if kind != "whep" else ""
        self.channel: Any = None
        self.created = time.monotonic()
        self.closed = False
        self.tasks: list[asyncio.Task[Any]] = []


class RemoteServer:
    """The signalling server, the peer connections' loop and the engine; `start()`, `stop()`, `url`."""

    def __init__(self, options: ServeOptions, engine: Engine) -> None:
        self.options = options
        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._run_loop, name="vcam-serve-rtc", daemon=True)
        self.sessions: dict[str, Session] = {}
        self._whep: dict[str, Session] = {}  # whep key -> publishing session
        self._lock = threading.Lock()
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._watchdog_future: Any = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.options.certfile else "http"
        host = self.options.host
        shown = f"[{host}]" if ":" in host else host
        port = self._http.server_address[1] if self._http is not None else self.options.port
        return f"{scheme}://{shown}:{port}"

    def start(self) -> None:
        from vcam.serve.rtc import allow_loopback_candidates, require_aiortc

        require_aiortc()
        if self.options.host in LOOPBACK_HOSTS:
            allow_loopback_candidates()
        self._http = _make_http_server(self)
        self._loop_thread.start()
        self.engine.start()
        self._http_thread = threading.Thread(target=self._http.serve_forever, name="vcam-serve-http", daemon=True)
        self._http_thread.start()
        self._watchdog_future = asyncio.run_coroutine_threadsafe(self._watchdog(), self.loop)

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for session in list(self.sessions.values()):
            self.call(self._close(session), timeout=10)
        if self._watchdog_future is not None:
            self._watchdog_future.cancel()
        self.engine.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join(timeout=10)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coroutine: Any, timeout: float | None = ANSWER_TIMEOUT_S) -> Any:
        """Run a coroutine on the loop from another thread; wait for it unless `timeout` is None."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return None if timeout is None else future.result(timeout)

    # -- offers ----------------------------------------------------------------------------------------------

    async def answer(self, sdp: str, kind: str, whep_key: str = "", style: str | None = None) -> tuple[Session, str]:
        """Make the peer connection for an offer; returns the session and the SDP answer.

        `style`: the client's style (the server's `--style` when None).
        """
        from aiortc import RTCPeerConnection, RTCSessionDescription

        publisher = None
        if kind == "whep":
            publisher = self._whep.get(whep_key)
            if publisher is None or publisher.closed:
                raise KeyError(whep_key)
        else:
            self.engine.reserve()
            if style is not None:
                self.engine.factory.check(style)
        pc = RTCPeerConnection(rtc_configuration(self.options.ice_servers))
        session = Session(secrets.token_urlsafe(RESOURCE_KEY_BYTES), pc, kind)
        if kind != "whep":
            self._listen(session, pc)  # before setRemoteDescription, which fires the track events
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except Exception as error:  # aiortc raises ValueError and others on bad SDP
                raise BadOffer(f"the SDP offer cannot be used: {error}") from error
            make_inactive(pc, "audio")
            if kind == "whep":
                if publisher is None:
                    raise RuntimeError("a WHEP session needs its publisher")
                track = FrameQueueTrack.create(self.loop)
                pc.addTrack(track)
                session.output_tracks.append(track)
                publisher.viewers[session.session_id] = session
            else:
                await self._attach_stream(session, pc, style or self.options.style)
            pc.on("connectionstatechange", lambda: self._on_state(session))
            await pc.setLocalDescription(await pc.createAnswer())
        except BaseException:
            await self._close(session)
            raise
        with self._lock:
            self.sessions[session.session_id] = session
            if session.whep_key:
                self._whep[session.whep_key] = session
        return session, pc.localDescription.sdp

    async def _attach_stream(self, session: Session, pc: Any, style: str) -> None:
        if session.kind == "client":
            track = FrameQueueTrack.create(self.loop)
            pc.addTrack(track)  # on the offered video transceiver: send-receive
            session.output_tracks.append(track)

        def deliver(frame: StyledFrame) -> None:
            for output in list(session.output_tracks):
                output.put(frame.image, frame.pts)
            for viewer in list(session.viewers.values()):
                for output in viewer.output_tracks:
                    output.put(frame.image, frame.pts)

        loop = asyncio.get_running_loop()
        session.stream = await loop.run_in_executor(None, self.engine.add, session.session_id, style, deliver)

    def _listen(self, session: Session, pc: Any) -> None:
        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "video":
                session.tasks.append(asyncio.ensure_future(self._consume(session, track)))

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            session.channel = channel
            channel.on("message", lambda message: self._on_message(session, message))
            session.tasks.append(asyncio.ensure_future(self._send_status(session)))

    async def _consume(self, session: Session, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        while not session.closed:
            try:
                frame = await track.recv()
            except MediaStreamError:
                break
            image, pts = frame_to_rgb(frame)
            if session.stream is not None:
                session.stream.push(image, pts)
                self.engine.notify()
        await self._close(session)

    def _on_message(self, session: Session, message: Any) -> None:
        try:
            request = parse_control(json.loads(message))
        except ValueError:
            self._send(session, {"type": "error", "message": "control messages are JSON objects"})
            return
        except UserError as error:
            self._send(session, {"type": "error", "message": str(error)})
            return
        asyncio.ensure_future(self._control(session, request))

    async def _control(self, session: Session, request: ControlRequest) -> None:
        loop = asyncio.get_running_loop()
        engine = self.engine
        try:
            if request.style is not None:
                state = await loop.run_in_executor(None, engine.set_style, session.session_id, request.style)
                self._send(session, {"type": "style", **state.settings()})
            if request.strength is not None or request.t_index_list is not None:
                state = await loop.run_in_executor(
                    None, engine.set_steps, session.session_id, request.strength, request.t_index_list
                )
                self._send(session, {"type": "steps", **state.settings()})
            if request.prompt is not None:
                pipeline = session.stream.style.pipeline if session.stream is not None else None
                if pipeline is None:
                    raise UserError("this style has no prompt: choose a diffusion style first")
                pipeline.set_prompt(request.prompt)
                self._send(session, {"type": "prompt", "prompt": request.prompt})
        except UserError as error:
            self._send(session, {"type": "error", "message": str(error)})
        except Exception as error:
            log.exception("control message failed")
            self._send(session, {"type": "error", "message": f"{type(error).__name__}: {error}"})

    def _send(self, session: Session, data: dict[str, Any]) -> None:
        channel = session.channel
        if channel is not None and channel.readyState == "open":
            channel.send(json.dumps(data))

    async def _send_status(self, session: Session) -> None:
        while not session.closed:
            stream = session.stream
            if stream is not None:
                status = {
                    "type": "status",
                    **stream.style.settings(),
                    "clients": len(self.engine.clients()),
                    "frames_in": stream.frames_in,
                    "frames_out": stream.frames_out,
                    "dropped": stream.frames_dropped,
                    "error": stream.error,
                    **stream.figures(),
                }
                self._send(session, status)
            await asyncio.sleep(STATUS_INTERVAL_S)

    # -- ends ------------------------------------------------------------------------------------------------

    def _on_state(self, session: Session) -> None:
        if session.pc.connectionState in ("failed", "closed"):
            asyncio.ensure_future(self._close(session))

    async def _watchdog(self) -> None:
        """Drop clients whose frames stopped (killed, network gone) and connections that never sent one."""
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                stream = session.stream
                if stream is None:
                    continue
                last = stream.last_input_time
                idle = now - last if last is not None else now - session.created
                limit = self.options.idle_timeout_s if last is not None else FIRST_CLIENT_FRAME_TIMEOUT_S
                if idle > limit:
                    log.info("client %s sent no frame for %.0f s: dropped", session.session_id[:8], idle)
                    await self._close(session)

    async def _close(self, session: Session) -> None:
        if session.closed:
            return
        session.closed = True
        with self._lock:
            self.sessions.pop(session.session_id, None)
            if session.whep_key:
                self._whep.pop(session.whep_key, None)
        for track in session.output_tracks:
            track.stop()
        for viewer in list(session.viewers.values()):
            await self._close(viewer)
        for other in list(self.sessions.values()):
            other.viewers.pop(session.session_id, None)
        if session.stream is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.engine.remove, session.session_id)
        for task in session.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        await session.pc.close()

    def status(self) -> dict[str, Any]:
        """What `GET /status` answers: the clients now, the most at once, the default style."""
        return {
            "clients": len(self.engine.clients()),
            "max_clients": self.engine.max_clients,
            "style": self.options.style,
            "batch": self.engine.batch,
        }

    def end(self, session_id: str, kind: str) -> bool:
        """DELETE: end a session of `kind`; False when there is none."""
        with self._lock:
            session = self.sessions.get(session_id)
        if session is None or session.kind != kind:
            return False
        self.call(self._close(session), timeout=10)
        return True


# ------------------------------------------------------------------------------------------------------------
# HTTP


def page_html() -> str:
    return resources.files("vcam.serve").joinpath("page.html").read_text(encoding="utf-8")


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        log.debug("http %s: " + format, self.address_string(), *args)

    # -- helpers

    def _reply(
        self,
        code: int,
        body: bytes = b"",
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _text(self, code: int, text: str) -> None:
        self._reply(code, (text + "\n").encode("utf-8"))

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and given and tokens_match(given.strip(), self.server.remote.options.token):
            return True
        self._reply(401, b"unauthorized\n", headers={"WWW-Authenticate": "Bearer"})
        return False

    def _body(self) -> bytes | None:
        length_text = self.headers.get("Content-Length")
        try:
            length = int(length_text) if length_text is not None else -1
        except ValueError:
            length = -1
        if length < 0:
            self._text(411, "a Content-Length is required")
            return None
        if length > MAX_SDP_BYTES:
            self.close_connection = True
            self._text(413, f"the body is larger than {MAX_SDP_BYTES} bytes")
            return None
        return self.rfile.read(length)

    # -- methods

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.split("?", 1)[0] in ("/", "/index.html"):
            self._reply(200, page_html().encode("utf-8"), "text/html; charset=utf-8")
            return
        if self.path.split("?", 1)[0] == "/status":
            if self._authorized():
                body = json.dumps(self.server.remote.status()).encode("utf-8")
                self._reply(200, body, "application/json")
            return
        self._text(404, "not found")

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._reply(204, headers={"Allow": "GET, POST, DELETE, OPTIONS", "Accept-Post": "application/sdp"})

    def do_POST(self) -> None:  # noqa: N802
        path, _, query = self.path.partition("?")
        if not self._authorized():
            return
        body = self._body()
        if body is None:
            return
        if path == "/offer":
            kind, key = "client", ""
        elif path == "/whip":
            kind, key = "whip", ""
        elif path.startswith("/whep/") and path.count("/") == 2:
            kind, key = "whep", path.removeprefix("/whep/")
        else:
            self._text(404, "not found")
            return
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/sdp":
            self._text(415, "the offer must be sent as Content-Type: application/sdp")
            return
        remote = self.server.remote
        try:
            sdp = check_offer(body)
            styles = urllib.parse.parse_qs(query).get("style")
            session, answer = remote.call(remote.answer(sdp, kind, key, styles[0] if styles else None))
        except BadOffer as error:
            self._text(400, str(error))
            return
        except TooManyClients as error:
            self._text(503, str(error))
            return
        except KeyError:
            self._text(404, "no such stream")
            return
        except UserError as error:
            self._text(400, str(error))
            return
        except Exception:
            log.exception("answering an offer failed")
            self._text(500, "the server could not answer this offer; see its log")
            return
        resource = f"/{'session' if kind == 'client' else kind}/{session.session_id}"
        if kind == "whep":
            resource = f"/whep/{key}/{session.session_id}"
        headers = {"Location": resource}
        if session.whep_key:
            headers["Link"] = f'</whep/{session.whep_key}>; rel="vcam-whep"'
        self._reply(201, answer.encode("utf-8"), "application/sdp", headers)

    def do_PATCH(self) -> None:  # noqa: N802 (trickle ICE: not supported, the answer carries all candidates)
        if not self._authorized():
            return
        self._reply(
            405, b"trickle ICE is not supported: send the offer with all candidates\n", headers={"Allow": "DELETE"}
        )

    def do_DELETE(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        kinds = {"session": "client", "whip": "whip", "whep": "whep"}
        if len(parts) in (2, 3) and parts[0] in kinds and self.server.remote.end(parts[-1], kinds[parts[0]]):
            self._reply(200)
            return
        self._text(404, "not found")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    remote: RemoteServer


def _make_http_server(remote: RemoteServer) -> _HTTPServer:
    import socket

    from vcam.errors import RemoteError

    options = remote.options
    _HTTPServer.address_family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    try:
        http = _HTTPServer((options.host, options.port), _Handler)
    except OSError as error:
        raise RemoteError(
            f"cannot listen on {options.host}:{options.port}: {error.strerror or error}; choose another --port"
        ) from error
    http.remote = remote
    if options.certfile:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(options.certfile, options.keyfile)
        except (OSError, ssl.SSLError) as error:
            http.server_close()
            raise RemoteError(f"cannot use --cert {options.certfile} / --key {options.keyfile}: {error}") from error
        http.socket = context.wrap_socket(http.socket, server_side=True)
    return http
