"""Real-time pacing for sources without a clock of their own (demo scene, video file, screen)."""

from __future__ import annotations

from vcam.clock import SYSTEM_CLOCK, Clock


def _check_fps(fps: float) -> float:
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return float(fps)


class FramePacer:
    """Frame n is due at start + n / fps: `wait(n)` sleeps until then.

    A reader that fell more than a frame behind restarts the clock instead of getting a burst of
    frames to catch up (a live source never delivers the past).
    """

    def __init__(self, fps: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.fps = _check_fps(fps)
        self.clock = clock
        self._start = clock.now()

    def start(self, fps: float | None = None) -> None:
        """Frame 0 is due now (call at open; `fps` sets a new rate, e.g. once a file's rate is known)."""
        if fps is not None:
            self.fps = _check_fps(fps)
        self._start = self.clock.now()

    def wait(self, index: int) -> None:
        due = self._start + index / self.fps
        now = self.clock.now()
        if now < due:
            self.clock.wait(due - now)
        elif now - due > 1.0 / self.fps:
            self._start = now - index / self.fps
