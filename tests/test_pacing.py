"""The frame pacer of the clock-less sources and the output loop: frames on schedule, no burst after a stall."""

from __future__ import annotations

import threading
import time

import pytest

from vcam.sources.pacing import FramePacer


def test_frames_are_released_on_schedule() -> None:
    pacer = FramePacer(50.0)
    pacer.start()
    started = time.monotonic()
    for index in range(6):
        pacer.wait(index)
    assert 5 / 50 - 0.005 <= time.monotonic() - started < 5 / 50 + 0.05


def test_a_reader_that_fell_behind_gets_no_burst() -> None:
    pacer = FramePacer(50.0)
    pacer.start()
    time.sleep(0.2)  # ten frames late
    pacer.wait(1)  # restarts the clock here
    started = time.monotonic()
    pacer.wait(2)  # due one frame interval after the restart, not at once
    assert time.monotonic() - started >= 0.015


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
