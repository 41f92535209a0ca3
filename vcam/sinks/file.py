"""The file sink: every output frame into a video file, at the output fps, frame for frame, crash-safe.

Frames are encoded with PyAV (libx264, preset `veryfast`, tune `zerolatency`, yuv420p; mpeg4 where the
FFmpeg build has no libx264) in a writer thread, so `send()` costs one copy; frame i gets pts i in a 1/fps
time base, so the file holds exactly the frames sent and plays at the output rate.

What survives what (mp4 and mov; mkv writes clusters as it goes but makes no promise):
- While recording, the file is a fragmented MP4 (`empty_moov`, a fragment at each keyframe or sooner, a
  keyframe at least every `KEYFRAME_INTERVAL_S`), and each fragment goes to the operating system as soon
  as FFmpeg writes it (no buffer in this process). A hard kill (kill -9, a crash) or a closed terminal
  loses at most the last second: the file under its own name plays up to there.
- The written fragments are forced to the disk (fsync) every `FSYNC_INTERVAL_S`: a power loss or a
  kernel crash loses at most the last `FSYNC_INTERVAL_S + KEYFRAME_INTERVAL_S` seconds (on file systems
  that honour fsync).
- On a clean close (the end of `--frames`, Ctrl-C, SIGTERM, SIGHUP) the fragments are rewritten as a
  regular MP4 with its index in front (`faststart`), which every player and editor opens, through a
  temporary file and an atomic rename: a crash during that step leaves the fragmented file in place.
- A write that fails (a full disk) stops the recording at once; the next `send()` raises `SinkError`
  (the runtime drops this sink and keeps the others), and `incomplete` says the file lacks frames.

An existing file is never replaced unless `overwrite=True` (`vcam run --overwrite`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from vcam.atomic_files import fsync_folder, remove_stale_temporaries, temporary_path
from vcam.errors import SinkError
from vcam.sinks.base import Sink
from vcam.video_containers import FRAGMENTABLE, container_format, supported_suffixes

logger = logging.getLogger(__name__)

#: frames that may wait for the encoder before `send()` waits too (back-pressure, never dropping a frame)
QUEUE_FRAMES = 60
#: a keyframe, and so an MP4 fragment on disk, at least this often: what a hard kill can lose
KEYFRAME_INTERVAL_S = 1.0
#: the written fragments are forced to the disk this often: what a power loss can lose on top
FSYNC_INTERVAL_S = 5.0
#: the MP4 muxer's flags while recording: the header first, then self-contained fragments, one per keyframe
FRAGMENT_FLAGS = "frag_keyframe+empty_moov+default_base_moof"


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


class RecordingFile:
    """The file a recording goes to, as the file object PyAV writes through.

    Every `write` goes straight to the operating system (`os.write`, no buffer in this process), so
    what FFmpeg wrote survives a kill of the process; `fsync` runs every `fsync_interval` seconds.
    `create` opens the file exclusively unless `overwrite`: an existing file is never truncated unasked.
    """

    def __init__(self, descriptor: int, path: Path, fsync_interval: float = FSYNC_INTERVAL_S) -> None:
        self.path = path
        self.bytes_written = 0
        self._descriptor: int | None = descriptor
        self._fsync_interval = fsync_interval
        self._last_sync = time.monotonic()

    @classmethod
    def create(cls, path: Path, overwrite: bool) -> RecordingFile:
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        flags |= os.O_TRUNC if overwrite else os.O_EXCL
        return cls(os.open(path, flags, 0o666), path)

    def _fd(self) -> int:
        if self._descriptor is None:
            raise ValueError(f"{self.path} is closed")
        return self._descriptor

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        descriptor = self._fd()
        done = 0
        while done < len(view):
            done += os.write(descriptor, view[done:])
        self.bytes_written += done
        if time.monotonic() - self._last_sync >= self._fsync_interval:
            self.sync()
        return done

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self._fd(), offset, whence)

    def tell(self) -> int:
        return os.lseek(self._fd(), 0, os.SEEK_CUR)

    def flush(self) -> None:
        """Nothing is buffered here: every write went to the operating system already."""

    def sync(self) -> None:
        os.fsync(self._fd())
        self._last_sync = time.monotonic()

    def close(self) -> None:
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            os.close(descriptor)


RecordingFileOpener = Callable[[Path, bool], RecordingFile]


class FileSink(Sink):
    """Writes the output to `path` (.mp4, .m4v, .mov or .mkv); see the module docstring for what survives what.

    `open_file(path, overwrite)` opens the file written through (the seam tests use to fill the disk).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, overwrite: bool = False, open_file: RecordingFileOpener | None = None
    ) -> None:
        self.path = Path(path).expanduser()
        self.overwrite = overwrite
        self.description = f"file {self.path}"
        self.codec = ""
        self.frames_written = 0
        self.frames_sent = 0
        self._open_file: RecordingFileOpener = open_file or RecordingFile.create
        self._size: tuple[int, int] = (0, 0)
        self._format = ""
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=QUEUE_FRAMES)
        self._writer: threading.Thread | None = None
        self._file: RecordingFile | None = None
        self._container: Any = None
        self._stream: Any = None
        self._error: BaseException | None = None
        self._error_reported = False

    @property
    def incomplete(self) -> bool:
        """True when a write failed: the file holds only the first `frames_written` frames."""
        return self._error is not None

    @property
    def error(self) -> BaseException | None:
        """Why writing failed (None while it works)."""
        return self._error

    @property
    def error_text(self) -> str:
        """Why writing failed, in words ("No space left on device"); "" while it works."""
        error = self._error
        if error is None:
            return ""
        return error.strerror if isinstance(error, OSError) and error.strerror else str(error)

    def _check_path(self) -> str:
        """The muxer for the path; SinkError for a path that cannot or must not be written."""
        directory = self.path.parent
        if self.path.is_dir():
            raise SinkError(f"cannot write {self.path}: it is a folder; give a file name such as {self.path}/out.mp4")
        if not directory.is_dir():
            what = "is a file, not a folder" if directory.exists() else "does not exist"
            raise SinkError(f"cannot write {self.path}: folder {directory} {what}; create it or pick another")
        container = container_format(self.path)
        if container is None:
            raise SinkError(
                f"cannot record to {self.path}: the file sink writes {supported_suffixes()} files; "
                "give a path ending in one of them (e.g. file:out.mp4)"
            )
        if not self.overwrite and (self.path.exists() or self.path.is_symlink()):
            raise SinkError(f"{self.path} already exists: pick another file name, or pass --overwrite to replace it")
        return container

    def open(self, width: int, height: int, fps: float) -> None:
        import av

        if width % 2 or height % 2:
            raise SinkError(f"the file sink needs an even width and height (yuv420p), got {width}x{height}")
        if fps <= 0:
            raise SinkError(f"the file sink needs a positive fps, got {fps}")
        self._format = self._check_path()
        try:
            self._file = self._open_file(self.path, self.overwrite)
        except FileExistsError:
            raise SinkError(
                f"{self.path} already exists: pick another file name, or pass --overwrite to replace it"
            ) from None
        except OSError as error:
            raise SinkError(
                f"cannot write {self.path}: {error.strerror or error}; pick a writable folder (file:PATH.mp4)"
            ) from None
        rate = frame_rate(fps)
        self.codec = _pick_codec()
        options = {"flush_packets": "1"}  # every packet FFmpeg muxes goes to our file at once
        if self._format in FRAGMENTABLE:
            options["movflags"] = FRAGMENT_FLAGS
        try:
            container = av.open(self._file, mode="w", format=self._format, options=options)
        except (OSError, av.FFmpegError, ValueError) as error:
            self._file.close()
            raise SinkError(f"cannot write {self.path}: {error}. Pick a writable path ending in .mp4") from error
        try:
            codec_options = {"preset": "veryfast", "tune": "zerolatency"} if self.codec == "libx264" else {}
            stream: Any = container.add_stream(self.codec, rate=rate, options=codec_options)
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            stream.time_base = 1 / rate
            stream.codec_context.gop_size = max(1, int(float(rate) * KEYFRAME_INTERVAL_S))
            if self.codec == "mpeg4":
                stream.bit_rate = 8_000_000
        except (av.FFmpegError, ValueError) as error:
            container.close()
            self._file.close()
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
        """Encode what is queued, finish the file and rewrite it as a regular MP4 (see the module docstring).

        After a failed write the file is closed as it is (its fragments up to the failure play); the error is
        raised here only if no `send()` reported it yet.
        """
        writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(None)
            writer.join()
        container, self._container = self._container, None
        recording, self._file = self._file, None
        if container is not None and recording is not None:
            try:
                if self._error is None:
                    for packet in self._stream.encode(None):
                        container.mux(packet)
                    container.close()
                    recording.sync()
            except Exception as error:  # the disk filled up at the very end
                self._error = error
            finally:
                if self._error is not None:
                    self._close_after_failure(container)
                recording.close()
            if self._error is None:
                fsync_folder(self.path.parent)
                if self._format in FRAGMENTABLE:
                    self._rewrite_as_regular_mp4()
                logger.info("wrote %d frames to %s", self.frames_written, self.path)
        if not self._error_reported:
            self._raise_writer_error()

    @staticmethod
    def _close_after_failure(container: Any) -> None:
        try:
            container.close()
        except Exception:  # writing the trailer fails on a full disk too; the fragments written stay playable
            logger.debug("closing a failed recording", exc_info=True)

    def _rewrite_as_regular_mp4(self) -> None:
        """Remux the fragmented recording into a regular MP4 (index in front), replacing it atomically."""
        import av

        remove_stale_temporaries(self.path)
        temporary = temporary_path(self.path)
        try:
            with av.open(str(self.path)) as source:
                packets = source.demux(source.streams.video[0])
                with av.open(str(temporary), "w", format=self._format, options={"movflags": "faststart"}) as target:
                    stream = target.add_stream_from_template(source.streams.video[0])
                    for packet in packets:
                        if packet.dts is None:  # the demuxer's end-of-stream marker
                            continue
                        packet.stream = stream
                        target.mux(packet)
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
            fsync_folder(self.path.parent)
        except Exception as error:  # the fragmented file is complete and plays: keep it
            logger.warning("kept %s as a fragmented MP4 (rewriting it failed: %s)", self.path, error)
            temporary.unlink(missing_ok=True)

    def _raise_writer_error(self) -> None:
        if self._error is not None:
            self._error_reported = True
            raise SinkError(
                f"writing {self.path} failed after {self.frames_written} frames ({self.error_text}): the recording "
                "is incomplete"
            ) from self._error

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
                self._error = error
                logger.debug("writing %s failed", self.path, exc_info=True)
