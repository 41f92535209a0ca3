"""The `Source` contract: where frames come from."""

from __future__ import annotations

from abc import ABC, abstractmethod

from vcam.frame import Frame


class Source(ABC):
    """A producer of RGB frames.

    - `open()` acquires the device or file. At start-up a failure raises `SourceError` (a user
      error: exit code 2); called again after `SourceUnavailable` it raises `SourceUnavailable`
      while the device is still gone, and the capture thread retries with backoff.
    - `read()` blocks until the next frame and returns it (HxWx3 uint8 RGB, size as reported by
      `size` after `open()`); it raises `SourceUnavailable` when the device is lost mid-run.
      Sources without their own clock (demo, file, screen) pace themselves at `fps`.
    - `close()` releases everything; it is safe to call twice and after a failed `open()`.
    """

    #: short human-readable description, e.g. "webcam 0 (1280x720 @ 30 fps)"
    description: str = "source"

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def read(self) -> Frame: ...

    @abstractmethod
    def close(self) -> None: ...

    #: set by each source: its frame size and rate (what the device reported, or what it paces at)
    _size: tuple[int, int] = (0, 0)
    _fps: float = 0.0

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames `read()` returns; valid after `open()`."""
        return self._size

    @property
    def fps(self) -> float:
        """Frames per second the source delivers (what the device reported, or its pacing)."""
        return self._fps
