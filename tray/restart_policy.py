"""When the tray restarts a camera that crashed: after a growing delay, and at most so often in a window.

A crash is restarted after `base_delay_s` (0.5 s), the next one within the window after twice that, and so
on up to `max_delay_s`; the sixth crash within ten minutes is not restarted at all (a crash loop: the user
sees the log and restarts by hand). Crashes older than the window are forgotten, so a camera that crashes
once a day is always restarted after the first, short delay. Time comes from an injectable `Clock`.
"""

from __future__ import annotations

import threading
from collections import deque

from vcam.clock import SYSTEM_CLOCK, Clock

#: at most this many automatic restarts ...
MAX_RESTARTS = 5
#: ... within this many seconds
RESTART_WINDOW_S = 600.0
#: the delay before the first restart in the window; each further one doubles it, up to MAX_DELAY_S
BASE_DELAY_S = 0.5
MAX_DELAY_S = 8.0


class RestartPolicy:
    """Counts the automatic restarts in a sliding window and says how long to wait before the next one.

    Thread-safe; `clock.now()` is read when a crash is recorded.
    """

    def __init__(
        self,
        clock: Clock = SYSTEM_CLOCK,
        *,
        max_restarts: int = MAX_RESTARTS,
        window_s: float = RESTART_WINDOW_S,
        base_delay_s: float = BASE_DELAY_S,
        max_delay_s: float = MAX_DELAY_S,
    ) -> None:
        if max_restarts < 0 or window_s <= 0 or base_delay_s < 0 or max_delay_s < base_delay_s:
            raise ValueError(
                f"bad restart policy: max_restarts={max_restarts}, window_s={window_s}, "
                f"base_delay_s={base_delay_s}, max_delay_s={max_delay_s}"
            )
        self.clock = clock
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self._restarts: deque[float] = deque()  # clock times of the restarts granted in the window
        self._lock = threading.Lock()

    def _forget_old(self, now: float) -> None:
        while self._restarts and now - self._restarts[0] >= self.window_s:
            self._restarts.popleft()

    def next_delay(self) -> float | None:
        """Record a crash now: the seconds to wait before restarting, or None when the limit is reached
        (`max_restarts` restarts were granted within the last `window_s` seconds)."""
        with self._lock:
            now = self.clock.now()
            self._forget_old(now)
            if len(self._restarts) >= self.max_restarts:
                return None
            delay = min(self.base_delay_s * 2 ** len(self._restarts), self.max_delay_s)
            self._restarts.append(now)
            return delay

    def restarts_in_window(self) -> int:
        """How many automatic restarts were granted within the last `window_s` seconds."""
        with self._lock:
            self._forget_old(self.clock.now())
            return len(self._restarts)

    def reset(self) -> None:
        """Forget every restart (the user restarted the camera by hand)."""
        with self._lock:
            self._restarts.clear()
