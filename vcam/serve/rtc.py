"""The aiortc pieces of the server and the client: tracks, peer connections, SDP checks, ICE servers.

aiortc is imported lazily (the `remote` extra). Video frames travel with 90 kHz media timestamps (pts); the
receiving side of a track sees them relative to the first frame it received.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from vcam.config import ICE_SCHEMES
from vcam.errors import MissingDependencyError, RemoteError, UserError

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

log = logging.getLogger(__name__)

#: the media clock of video in RTP
VIDEO_CLOCK_RATE = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
#: frames a track buffers for a slow encoder before it drops the oldest
TRACK_QUEUE_FRAMES = 2
#: SDP offers larger than this are refused (a real offer is a few kB)
MAX_SDP_BYTES = 64 * 1024


class BadOffer(RemoteError):
    """An SDP offer (or ICE input) that cannot be used; the server answers 400."""


def require_aiortc() -> None:
    try:
        import aiortc  # noqa: F401
    except ImportError as error:
        raise MissingDependencyError("remote mode needs aiortc: pip install 'live2diff-vcam[remote]'") from error
    logging.getLogger("aioice").setLevel(logging.WARNING)  # one line per ICE check otherwise


def allow_loopback_candidates() -> None:
    """Also offer 127.0.0.1 as an ICE host candidate (aioice leaves loopback out), for a server on loopback."""
    import aioice.ice

    original = aioice.ice.get_host_addresses
    if getattr(original, "vcam_loopback", False):
        return

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = list(original(use_ipv4, use_ipv6))
        if use_ipv4 and "127.0.0.1" not in addresses:
            addresses.append("127.0.0.1")
        return addresses

    with_loopback.vcam_loopback = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = with_loopback


def check_ice_server(url: str) -> str:
    """An ICE server URL as `--ice-server` takes it: stun:HOST[:PORT] or turn(s):USER:PASSWORD@HOST[:PORT]."""
    if not url.startswith(ICE_SCHEMES) or len(url.split(":", 1)[1]) == 0:
        raise UserError(
            f"ICE server {url!r} must start with {', '.join(ICE_SCHEMES)}: e.g. stun:stun.example.org:3478 "
            "or turn:USER:PASSWORD@turn.example.org:3478"
        )
    return url


def rtc_configuration(ice_servers: list[str]) -> Any:
    """aiortc's RTCConfiguration for `--ice-server` URLs (TURN credentials given as turn:USER:PASSWORD@HOST)."""
    from aiortc import RTCConfiguration, RTCIceServer

    servers = []
    for url in ice_servers:
        scheme, rest = url.split(":", 1)
        if scheme.startswith("turn") and "@" in rest:
            credentials, host = rest.rsplit("@", 1)
            username, _, password = credentials.partition(":")
            servers.append(RTCIceServer(urls=f"{scheme}:{host}", username=username, credential=password))
        else:
            servers.append(RTCIceServer(urls=url))
    return RTCConfiguration(iceServers=servers)


def check_offer(body: bytes) -> str:
    """The SDP text of an offer, or BadOffer: size, encoding, and at least one video section."""
    if len(body) > MAX_SDP_BYTES:
        raise BadOffer(f"the SDP offer is larger than {MAX_SDP_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadOffer("the SDP offer is not UTF-8 text") from None
    lines = [line.strip() for line in text.splitlines()]
    if not lines or lines[0] != "v=0":
        raise BadOffer("the body is not an SDP offer (it must start with v=0)")
    if not any(line.startswith("m=video ") for line in lines):
        raise BadOffer("the SDP offer has no video section")
    return text


def make_inactive(pc: RTCPeerConnection, kind: str) -> None:
    """Answer every offered `kind` section (OBS always offers audio) as inactive, instead of failing."""
    for transceiver in pc.getTransceivers():
        if transceiver.kind == kind:
            transceiver.direction = "inactive"


def _video_track_base() -> type:
    from aiortc import MediaStreamTrack

    return MediaStreamTrack


class FrameQueueTrack:
    """Factory of a video track fed from another thread with `put(image, pts)` (drops the oldest frame)."""

    @staticmethod
    def create(loop: asyncio.AbstractEventLoop) -> Any:
        base = _video_track_base()

        class _Track(base):  # type: ignore[valid-type,misc]
            kind = "video"

            def __init__(self) -> None:
                super().__init__()
                self.queue: asyncio.Queue[tuple[np.ndarray, int]] = asyncio.Queue(maxsize=TRACK_QUEUE_FRAMES)
                self.loop = loop
                self.dropped = 0
                self.first_pts: int | None = None  # the pts of the first frame this track sent

            def put(self, image: np.ndarray, pts: int) -> None:
                """Thread-safe: queue a frame for sending."""
                self.loop.call_soon_threadsafe(self._put_now, image, pts)

            def _put_now(self, image: np.ndarray, pts: int) -> None:
                if self.readyState != "live":
                    return
                if self.queue.full():
                    self.queue.get_nowait()
                    self.dropped += 1
                self.queue.put_nowait((image, pts))

            async def recv(self) -> Any:
                import av
                from aiortc.mediastreams import MediaStreamError

                if self.readyState != "live":
                    raise MediaStreamError
                image, pts = await self.queue.get()
                if self.first_pts is None:
                    self.first_pts = pts
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame.pts = pts
                frame.time_base = VIDEO_TIME_BASE
                return frame

        return _Track()


def frame_to_rgb(frame: Any) -> tuple[np.ndarray, int]:
    """A received av.VideoFrame -> ([H, W, 3] uint8 RGB, pts in 90 kHz units)."""
    image = frame.to_ndarray(format="rgb24")
    pts = int(frame.pts or 0)
    if frame.time_base is not None and fractions.Fraction(frame.time_base) != VIDEO_TIME_BASE:
        pts = round(pts * fractions.Fraction(frame.time_base) * VIDEO_CLOCK_RATE)
    return image, pts
