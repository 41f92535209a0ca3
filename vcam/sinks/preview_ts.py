"""The preview's `/stream.ts`: H.264 in MPEG-TS with real timestamps, for players that pace by them.

OBS's Media Source (ffmpeg inside), ffplay and VLC play it at the camera's rate with a low delay: libx264 tuned
for zero latency (no B-frames, no lookahead), a keyframe with SPS/PPS (and PAT/PMT) at least every second,
and each frame's timestamp is its index at the output frame rate (frames the encoder had to skip leave a gap
in time, as they did live).

Encoded once however many clients read it: one encoder thread (running only while someone watches) fans each
frame's bytes out to per-client bounded queues. A client starts at the next keyframe (a first client gets one
at once); a client that falls more than CLIENT_QUEUE_FRAMES behind loses its backlog and resumes at the next
keyframe, so a slow client never delays the encoder or the others.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

CONTENT_TYPE = "video/mp2t"
#: frames a client may lag behind the encoder before its backlog is dropped
CLIENT_QUEUE_FRAMES = 30
#: libx264 options: the fastest preset, zero latency (no lookahead, no frame threads), no B-frames
X264_OPTIONS = {"preset": "ultrafast", "tune": "zerolatency", "bf": "0"}


def frame_rate(fps: float) -> Fraction:
    """The output rate as an exact fraction (30 -> 30/1, 29.97 -> 30000/1001)."""
    return Fraction(fps).limit_denominator(1001)


class _ChunkCollector:
    """The muxer's output file: collects what it writes until `take()`."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


class TsEncoder:
    """H.264 + MPEG-TS encoding of RGB frames, one frame's bytes at a time (see the module docstring)."""

    def __init__(self, width: int, height: int, fps: float) -> None:
        import av

        self.rate = frame_rate(fps)
        self.keyframe_interval = max(1, int(self.rate))  # frames: at most one second apart
        self._output = _ChunkCollector()
        muxer_options = {"flush_packets": "1", "mpegts_flags": "pat_pmt_at_frames"}
        self._container: Any = av.open(self._output, mode="w", format="mpegts", options=muxer_options)
        stream: Any = self._container.add_stream("libx264", rate=self.rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = 1 / self.rate
        stream.codec_context.time_base = 1 / self.rate
        stream.codec_context.gop_size = self.keyframe_interval
        stream.codec_context.max_b_frames = 0
        stream.codec_context.options = {
            **X264_OPTIONS,
            "x264-params": (
                f"keyint={self.keyframe_interval}:min-keyint={self.keyframe_interval}:scenecut=0:repeat-headers=1"
            ),
        }
        self._stream = stream
        self._first_index: int | None = None  # timestamps count from the first frame (x264 wants 0 first)
        self._last_index: int | None = None

    def encode(self, image: np.ndarray, index: int) -> list[tuple[bytes, bool]]:
        """Encode frame `index`, timestamped (index - first index) / fps: each packet's bytes and key flag."""
        import av

        if self._last_index is not None and index <= self._last_index:
            raise ValueError(f"frame index {index} is not after the previous one ({self._last_index})")
        if self._first_index is None:
            self._first_index = index
        self._last_index = index
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = index - self._first_index
        frame.time_base = self._stream.codec_context.time_base  # 1/fps (the stream's becomes 1/90000 once muxing)
        out: list[tuple[bytes, bool]] = []
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
            out.append((self._output.take(), bool(packet.is_keyframe)))
        return out

    def close(self) -> None:
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()


class _Client:
    def __init__(self) -> None:
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=CLIENT_QUEUE_FRAMES)
        self.waiting_for_keyframe = True

    def offer(self, data: bytes, keyframe: bool) -> None:
        """Queue one frame's bytes; a client that is full drops its backlog and waits for a keyframe."""
        if self.waiting_for_keyframe and not keyframe:
            return
        self.waiting_for_keyframe = False
        try:
            self.queue.put_nowait(data)
        except queue.Full:
            self._drop_backlog()
            self.waiting_for_keyframe = True
            if keyframe:
                self.offer(data, keyframe)

    def end(self) -> None:
        self._drop_backlog()
        self.queue.put_nowait(None)

    def _drop_backlog(self) -> None:
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return


class TsBroadcaster:
    """Runs the encoder thread while clients watch and fans its output out to them.

    `latest` returns (image, index) of the newest frame sent to the sink, or None; `wait_newer(index)` blocks
    until a frame newer than `index` arrives or the sink closes (then it returns False).
    """

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        latest: Callable[[], tuple[np.ndarray, int] | None],
        wait_newer: Callable[[int, float], bool],
    ) -> None:
        self.width, self.height, self.fps = width, height, fps
        self._latest = latest
        self._wait_newer = wait_newer
        self._lock = threading.Lock()
        self._clients: set[_Client] = set()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.frames_encoded = 0

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def stream(self) -> Iterator[bytes]:
        """One client's bytes, from its first keyframe until the sink closes."""
        client = _Client()
        with self._lock:
            if self._closing.is_set():
                return
            self._clients.add(client)
            if self._thread is None:
                self._thread = threading.Thread(target=self._encode_loop, name="vcam-preview-ts", daemon=True)
                self._thread.start()
        try:
            while True:
                data = client.queue.get()
                if data is None:
                    return
                yield data
        finally:
            with self._lock:
                self._clients.discard(client)

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            thread = self._thread
            clients = list(self._clients)
        if thread is not None:
            thread.join()
        for client in clients:
            client.end()

    def _encode_loop(self) -> None:
        encoder: TsEncoder | None = None
        index = -1
        try:
            while not self._closing.is_set():
                if not self._wait_newer(index, 0.5):
                    continue
                with self._lock:
                    if not self._clients:  # nobody watches: stop encoding until someone does
                        self._thread = None
                        return
                newest = self._latest()
                if newest is None:
                    continue
                image, index = newest
                if encoder is None:  # its first frame is a keyframe: the first client starts at once
                    encoder = TsEncoder(self.width, self.height, self.fps)
                try:
                    packets = encoder.encode(image, index)
                except Exception:  # one bad frame must not end the stream for every client
                    logger.exception("preview: H.264 encoding failed; skipping frame %d", index)
                    continue
                self.frames_encoded += 1
                with self._lock:
                    clients = list(self._clients)
                for data, is_keyframe in packets:
                    for client in clients:
                        client.offer(data, is_keyframe)
        finally:
            if encoder is not None:
                try:
                    encoder.close()
                except Exception:
                    logger.debug("preview: closing the H.264 encoder failed", exc_info=True)
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None
                clients = list(self._clients) if self._closing.is_set() else []
            for client in clients:
                client.end()
