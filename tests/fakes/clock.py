"""A clock the test drives: time moves only when the test (or, with `auto_advance`, a wait) moves it."""

from __future__ import annotations

import threading

#: deadlines computed as start + n / fps may miss the sum of n advances by a rounding error
_EPSILON = 1e-9


class ManualClock:
    """A `vcam.clock.Clock` whose time is set by `advance()`.

    `wait(seconds)` blocks (in real time) until the test has advanced the clock that far, or `stop` is
    set. With `auto_advance=True` a wait moves the time forward itself and returns at once: a
    single-threaded pacer then runs on exact virtual time.
    """

    def __init__(self, start: float = 1000.0, *, auto_advance: bool = False) -> None:
        self._now = start
        self.auto_advance = auto_advance
        self.waits: list[float] = []  # every wait asked for, in seconds
        self._changed = threading.Condition()

    def now(self) -> float:
        with self._changed:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._changed:
            self._now += seconds
            self._changed.notify_all()

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        with self._changed:
            self.waits.append(seconds)
            deadline = self._now + seconds
            if self.auto_advance:
                self._now = max(self._now, deadline)
            while self._now < deadline - _EPSILON:
                if stop is not None and stop.is_set():
                    return True
                self._changed.wait(0.01)  # real time, only to notice `stop`
        return stop is not None and stop.is_set()
