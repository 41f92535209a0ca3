"""Polling helpers for tests that wait on background threads (bounded in time, never forever)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll `condition` until it is truthy or `timeout` seconds pass; True if it became truthy."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """`wait_until`, failing the test with `what` when the time runs out."""
    if not wait_until(condition, timeout):
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
