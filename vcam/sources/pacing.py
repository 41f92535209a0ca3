"""Real-time pacing: the one rule for frames due at a fixed rate, used by the clock-less sources (demo scene,
video file, screen) and by the runtime's output loop."""

from __future__ import annotations

import threading

from vcam.clock import SYSTEM_CLOCK, Clock

#: a frame more than this many frame intervals late restarts the clock (no catch-up burst)
MAX_LATE_FRAMES = 2


def _check_fps(fps: float) -> float:
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return float(fps)


class FramePacer:
    """Frame n is due at start + n / fps: `wait(n)` sleeps until then.

    A caller that fell more than `MAX_LATE_FRAMES` frames behind restarts the clock instead of getting a
    burst of frames to catch up (a live source never delivers the past; a virtual camera never sends a
    burst). With `stop`, a wait ends early when the event is set.
    """

    def __init__(self, fps: float, clock: Clock = SYSTEM_CLOCK, stop: threading.Event | None = None) -> None:
        self.fps = _check_fps(fps)
        self.clock = clock
        self._stop = stop
        self._start = clock.now()

    def start(self, fps: float | None = None) -> None:
        """Frame 0 is due now (call at open; `fps` sets a new rate, e.g. once a file's rate is known)."""
        if fps is not None:
            self.fps = _check_fps(fps)
        self._start = self.clock.now()

    def due(self, index: int) -> float:
        """When frame `index` is due, on the clock's scale."""
        return self._start + index / self.fps

    def wait(self, index: int) -> bool:
        """Sleep until frame `index` is due; False when the `stop` event was set meanwhile."""
        due = self.due(index)
        now = self.clock.now()
        if now < due:
            if self.clock.wait(due - now, self._stop):
                return False
        elif now - due > MAX_LATE_FRAMES / self.fps:
            self._start = now - index / self.fps
        return self._stop is None or not self._stop.is_set()
