"""The frame pacer of the clock-less sources and the output loop: frames on schedule, no burst after a stall."""

from __future__ import annotations

import threading
import time

import pytest

from tests.fakes.clock import ManualClock
from vcam.sources.pacing import FramePacer


def test_frames_are_released_on_schedule() -> None:
    clock = ManualClock(auto_advance=True)
    pacer = FramePacer(50.0, clock)
    pacer.start()
    started = clock.now()
    released = []
    for index in range(6):
        pacer.wait(index)
        released.append(clock.now() - started)
    assert released == pytest.approx([index / 50 for index in range(6)], abs=1e-9)


def test_a_reader_on_time_never_waits() -> None:
    clock = ManualClock(auto_advance=True)
    pacer = FramePacer(50.0, clock)
    pacer.start()
    clock.advance(0.030)  # frame 1 is due at 0.020: late by half a frame, within the slack
    pacer.wait(1)
    assert clock.waits == []


def test_a_reader_that_fell_behind_gets_no_burst() -> None:
    clock = ManualClock(auto_advance=True)
    pacer = FramePacer(50.0, clock)
    pacer.start()
    clock.advance(0.2)  # ten frames late
    pacer.wait(1)  # restarts the clock here, without waiting
    assert clock.waits == []
    restarted = clock.now()
    pacer.wait(2)  # due one frame interval after the restart, not at once
    assert clock.now() - restarted == pytest.approx(1 / 50, abs=1e-9)


def test_start_can_set_a_new_rate_and_rejects_a_bad_one() -> None:
    pacer = FramePacer(30.0)
    pacer.start(fps=25.0)
    assert pacer.fps == 25.0
    with pytest.raises(ValueError, match="fps must be > 0"):
        pacer.start(fps=0)


def test_a_wait_ends_when_the_stop_event_is_set() -> None:
    stop = threading.Event()
    pacer = FramePacer(1.0, stop=stop)  # frame 5 is due in five seconds
    pacer.start()
    threading.Timer(0.05, stop.set).start()
    started = time.monotonic()
    assert pacer.wait(5) is False
    assert time.monotonic() - started < 4.0
    assert pacer.wait(0) is False  # stopped: every later wait says so at once
