"""Reconnecting to a source that went away: the backoff schedule and the first-open/reopen error rule."""

from __future__ import annotations

from vcam.errors import SourceError, SourceUnavailable

#: seconds to wait before the first reconnect attempt; doubled after each failed attempt
RECONNECT_INITIAL_DELAY = 1.0
#: the longest wait between two reconnect attempts
RECONNECT_MAX_DELAY = 10.0


class Backoff:
    """Exponential backoff: 1 s, 2 s, 4 s, 8 s, 10 s, 10 s, ... until `reset()`.

    The capture thread calls `next_delay()` before each reconnect attempt and `reset()` once the
    source delivers frames again.
    """

    def __init__(
        self, initial: float = RECONNECT_INITIAL_DELAY, factor: float = 2.0, maximum: float = RECONNECT_MAX_DELAY
    ) -> None:
        if initial <= 0:
            raise ValueError(f"backoff initial delay must be > 0, got {initial}")
        if factor < 1:
            raise ValueError(f"backoff factor must be >= 1, got {factor}")
        if maximum < initial:
            raise ValueError(f"backoff maximum {maximum} must be >= the initial delay {initial}")
        self.initial = initial
        self.factor = factor
        self.maximum = maximum
        self.attempts = 0

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; each call counts one attempt."""
        delay = min(self.initial * self.factor**self.attempts, self.maximum)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """Start again from the initial delay (call after a successful reconnect)."""
        self.attempts = 0


def open_failure(opened_before: bool, message: str) -> SourceError | SourceUnavailable:
    """The exception for a failed `open()`.

    At the first open a failure is the user's to fix (`SourceError`: exit code 2); once a source has
    opened successfully, a failed reopen means the device is still gone (`SourceUnavailable`: the
    capture thread keeps retrying with backoff).
    """
    if opened_before:
        return SourceUnavailable(message)
    return SourceError(message)
