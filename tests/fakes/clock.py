"""A clock the test drives: time moves only when the test (or, with `auto_advance`, a wait) moves it."""

from __future__ import annotations

import threading
from collections.abc import Callable

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
        self._deadlines: list[float] = []  # of the waits in progress
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
            self._deadlines.append(deadline)
            self._changed.notify_all()
            try:
                while self._now < deadline - _EPSILON:
                    if stop is not None and stop.is_set():
                        return True
                    self._changed.wait(0.01)  # real time, only to notice `stop`
            finally:
                self._deadlines.remove(deadline)
                self._changed.notify_all()
        return stop is not None and stop.is_set()

    def wait_for_waiters(self, count: int | Callable[[], int], timeout: float = 10.0) -> float:
        """Block (real time) until exactly `count` threads wait on this clock, none of them due yet: every thread
        driven by the clock has done what was due. `count` may be a function (of the test's fakes), evaluated
        whenever a wait begins or ends. Returns the earliest deadline among them."""
        expected = count if callable(count) else lambda: count
        with self._changed:
            ready = self._changed.wait_for(
                lambda: len(self._deadlines) == expected() and min(self._deadlines) > self._now + _EPSILON, timeout
            )
            if not ready:
                raise AssertionError(
                    f"timed out waiting for {expected()} threads to wait on the clock at {self._now}: "
                    f"waits in progress until {sorted(self._deadlines)}"
                )
            return min(self._deadlines)

    def advance_to(self, when: float) -> None:
        """Set the time to `when` (never back)."""
        with self._changed:
            self._now = max(self._now, when)
            self._changed.notify_all()
