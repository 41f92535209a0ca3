"""The clock the frame loop and the source pacers read and wait on: monotonic time, injectable for tests.

Everything that paces frames (the runtime's output thread, `FramePacer`) takes a `Clock`, so a test can
drive time itself and check schedules exactly instead of measuring wall time on a loaded machine.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Seconds on a monotonic scale, and a wait that a stop event can cut short."""

    def now(self) -> float:
        """The current time in seconds (monotonic: never goes back; the origin means nothing)."""
        ...

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Wait `seconds` (nothing when <= 0); True when `stop` was set (then the wait may end early)."""
        ...


class MonotonicClock:
    """The system's monotonic clock (`time.monotonic`); waits sleep, or wait on the stop event."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        if stop is not None:
            return stop.wait(max(0.0, seconds)) if seconds > 0 else stop.is_set()
        if seconds > 0:
            time.sleep(seconds)
        return False


#: the clock used unless one is injected
SYSTEM_CLOCK: Clock = MonotonicClock()
