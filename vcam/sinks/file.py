"""The file sink: every output frame into a video file (mp4), at the output fps, frame for frame.

Frames are encoded with PyAV (libx264, preset `veryfast`, yuv420p; mpeg4 where the FFmpeg build has
no libx264) in a writer thread, so `send()` costs one copy; frame i gets pts i in a 1/fps time base,
so the file holds exactly the frames sent and plays at the output rate.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from vcam.errors import SinkError
from vcam.sinks.base import Sink

logger = logging.getLogger(__name__)

#: frames that may wait for the encoder before `send()` waits too (back-pressure, never dropping a frame)
QUEUE_FRAMES = 60


def frame_rate(fps: float) -> Fraction:
    """`fps` as an exact rate: NTSC rates (29.97, 59.94, 23.976) become n*1000/1001, others a simple fraction."""
    ntsc = round(fps * 1001 / 1000)
    if ntsc > 0 and abs(Fraction(ntsc * 1000, 1001) - Fraction(fps)) < 0.005 and abs(fps - ntsc) > 1e-6:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(fps).limit_denominator(1000)


def _pick_codec() -> str:
    import av

    available = av.codecs_available
    return "libx264" if "libx264" in available else "mpeg4"


class FileSink(Sink):
    """Writes the output to `path` (mp4 unless the suffix names another container FFmpeg knows)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self.description = f"file {self.path}"
        self.codec = ""
        self.frames_written = 0
        self.frames_sent = 0
        self._size: tuple[int, int] = (0, 0)
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=QUEUE_FRAMES)
        self._writer: threading.Thread | None = None
        self._container: Any = None
        self._stream: Any = None
        self._error: BaseException | None = None

    def open(self, width: int, height: int, fps: float) -> None:
        import av

        if width % 2 or height % 2:
            raise SinkError(f"the file sink needs an even width and height (yuv420p), got {width}x{height}")
        if fps <= 0:
            raise SinkError(f"the file sink needs a positive fps, got {fps}")
        directory = self.path.parent
        if not directory.is_dir():
            raise SinkError(f"cannot write {self.path}: folder {directory} does not exist; create it or pick another")
        if self.path.is_dir():
            raise SinkError(f"cannot write {self.path}: it is a folder; give a file name such as {self.path}/out.mp4")
        container_format = None if self.path.suffix else "mp4"
        try:
            container = av.open(str(self.path), mode="w", format=container_format)
        except (OSError, av.FFmpegError, ValueError) as error:
            raise SinkError(f"cannot write {self.path}: {error}. Pick a writable path ending in .mp4") from error
        rate = frame_rate(fps)
        self.codec = _pick_codec()
        try:
            options = {"preset": "veryfast"} if self.codec == "libx264" else {}
            stream: Any = container.add_stream(self.codec, rate=rate, options=options)
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            stream.time_base = 1 / rate
            if self.codec == "mpeg4":
                stream.bit_rate = 8_000_000
        except (av.FFmpegError, ValueError) as error:
            container.close()
            raise SinkError(f"cannot encode {self.codec} into {self.path}: {error}") from error
        self._container = container
        self._stream = stream
        self._size = (width, height)
        self._writer = threading.Thread(target=self._write_loop, name="vcam-file-writer", daemon=True)
        self._writer.start()
        logger.info("recording to %s: %dx%d at %s fps with %s", self.path, width, height, rate, self.codec)

    def send(self, image: np.ndarray) -> None:
        """Queue one frame (a copy) for the writer; waits only when the encoder is `QUEUE_FRAMES` behind."""
        width, height = self._size
        if image.shape != (height, width, 3) or image.dtype != np.uint8:
            raise ValueError(f"unexpected frame: {image.shape} {image.dtype} != {(height, width, 3)} uint8")
        if self._writer is None:
            raise SinkError("the file sink is not open: call open() before send()")
        self._raise_writer_error()
        self._queue.put(image.copy())
        self.frames_sent += 1

    def close(self) -> None:
        """Encode what is queued, flush the encoder and finish the file."""
        writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(None)
            writer.join()
        container, self._container = self._container, None
        if container is not None:
            try:
                if self._error is None:
                    for packet in self._stream.encode(None):
                        container.mux(packet)
            finally:
                container.close()
            logger.info("wrote %d frames to %s", self.frames_written, self.path)
        self._raise_writer_error()

    def _raise_writer_error(self) -> None:
        if self._error is not None:
            error = self._error
            raise SinkError(f"writing {self.path} failed after {self.frames_written} frames: {error}") from error

    def _write_loop(self) -> None:
        import av

        while True:
            image = self._queue.get()
            if image is None:
                return
            if self._error is not None:
                continue  # keep draining so send() never blocks on a dead writer
            try:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = self.frames_written
                for packet in self._stream.encode(frame):
                    self._container.mux(packet)
                self.frames_written += 1
            except Exception as error:  # disk full, device gone: reported by the next send() or close()
                logger.error("writing %s failed: %s", self.path, error)
                self._error = error
