"""A video file as a source (PyAV): decoded to RGB, paced at the file's frame rate, looped at the end."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vcam.clock import SYSTEM_CLOCK, Clock
from vcam.errors import SourceError, SourceUnavailable
from vcam.file_kinds import why_not_a_file
from vcam.frame import Frame
from vcam.sources.base import Source
from vcam.sources.pacing import FramePacer
from vcam.sources.reconnect import open_failure

logger = logging.getLogger(__name__)

#: used when the file does not state its frame rate
FALLBACK_FPS = 30.0


def _error_text(error: BaseException) -> str:
    """An FFmpeg/OS error without its `[Errno N]` prefix."""
    text = getattr(error, "strerror", None)
    return text if isinstance(text, str) and text else str(error)


class EndOfVideo(Exception):
    """`read()` reached the end of a file opened with `loop=False`."""


class VideoFileSource(Source):
    """Frames of the first video stream in `path`; `fps` overrides the file's rate for pacing.

    With `loop=True` (the default) the file starts over at its end; with `loop=False`, `read()`
    raises `EndOfVideo` there. `realtime=False` drops the pacing (tests, offline processing). Frames are
    due and stamped on `clock` (the system's monotonic clock unless a test injects one).
    """

    def __init__(
        self,
        path: str | Path,
        fps: float | None = None,
        loop: bool = True,
        realtime: bool = True,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if fps is not None and not fps > 0:
            raise SourceError(f"video file fps must be > 0, got {fps}")
        self.path = Path(path).expanduser()
        self.loop = loop
        self.realtime = realtime
        self._requested_fps = fps
        self._fps = float(fps) if fps is not None else FALLBACK_FPS
        self._size = (0, 0)
        self._container: Any = None
        self._frames: Iterator[Any] | None = None
        self._pending: np.ndarray | None = None
        self._index = 0
        self._clock = clock
        self._pacer = FramePacer(self._fps, clock)
        self._opened_before = False
        self.loops = 0
        self.description = f"video file {self.path}"

    def open(self) -> None:
        import av

        self.close()
        what = why_not_a_file(self.path)
        if what is not None:
            raise open_failure(
                self._opened_before, f'video file {str(self.path)!r} {what}; check the path in source = "file:PATH"'
            )
        try:
            container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError, ValueError) as error:
            raise open_failure(
                self._opened_before,
                f"cannot read video file {str(self.path)!r}: {_error_text(error)}; "
                "use a video file FFmpeg can decode (mp4, mkv, webm, ...)",
            ) from error
        if not container.streams.video:
            container.close()
            raise open_failure(self._opened_before, f"video file {str(self.path)!r} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        file_fps = float(rate) if rate else 0.0
        if self._requested_fps is not None:
            self._fps = float(self._requested_fps)
        elif 0 < file_fps <= 1000:
            self._fps = file_fps
        else:
            self._fps = FALLBACK_FPS
            logger.warning("video file %s states no frame rate; playing at %g fps", self.path, FALLBACK_FPS)
        self._container = container
        self._frames = container.decode(stream)
        try:
            first = self._next_image()
        except (SourceUnavailable, EndOfVideo) as error:
            self.close()
            raise open_failure(
                self._opened_before, f"video file {str(self.path)!r} has no decodable frames ({error})"
            ) from error
        self._pending = first
        self._size = (int(first.shape[1]), int(first.shape[0]))
        self._index = 0
        self._pacer.start(self._fps)
        self._opened_before = True
        self.description = f"video file {self.path.name} {self._size[0]}x{self._size[1]} @ {self._fps:g} fps"
        logger.info("opened %s (loop=%s)", self.description, self.loop)

    def _next_image(self) -> np.ndarray:
        """Decode the next picture as RGB; at the end seek back (loop) or raise EndOfVideo."""
        import av

        if self._frames is None:
            raise RuntimeError("VideoFileSource read before open()")
        for attempt in range(2):
            try:
                video_frame = next(self._frames, None)
            except av.error.FFmpegError as error:
                raise SourceUnavailable(f"decoding {str(self.path)!r} failed: {_error_text(error)}") from error
            if video_frame is not None:
                image: np.ndarray = video_frame.to_ndarray(format="rgb24")  # [h, w, 3]
                return image
            if not self.loop:
                raise EndOfVideo(f"end of video file {str(self.path)!r}")
            if attempt == 0:
                stream = self._container.streams.video[0]
                self._container.seek(0, stream=stream)
                self._frames = self._container.decode(stream)
                self.loops += 1
        raise SourceUnavailable(f"video file {str(self.path)!r} yields no frames after seeking to its start")

    def read(self) -> Frame:
        if self._container is None:
            raise RuntimeError("VideoFileSource.read() called before open() (or after close())")
        if self._pending is not None:
            image, self._pending = self._pending, None
        else:
            image = self._next_image()
        if self.realtime:
            self._pacer.wait(self._index)
        frame = Frame(image=np.ascontiguousarray(image), timestamp=self._clock.now(), index=self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = None
        self._frames = None
        self._pending = None
