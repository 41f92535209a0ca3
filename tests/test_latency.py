"""Latency: per-frame timing from capture to send, the figures over a window, the fixed output delay, the audio
delay advice, the driver's timestamps, and the kept measurement. The runtime tests run on a manual clock with a
model of known delay and cost, stepping the clock from one due wait to the next."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fakes.camera import FakeCamera, FakeCameraWorld
from tests.fakes.clock import ManualClock
from tests.test_runtime import RecordingSink
from vcam.frame import Frame
from vcam.frame_stats import FrameStats
from vcam.latency import (
    LATENCY_STAGES,
    FrameTiming,
    LatencyMeter,
    Measurement,
    audio_delay_hint,
    audio_delay_ms,
    load_measurement,
    pick_delayed,
    save_measurement,
)
from vcam.runtime import Runtime
from vcam.sources.base import Source
from vcam.sources.webcam import WebcamSource
from vcam.status import Status
from vcam.translators.base import Translator

W, H, FPS = 64, 48, 30.0
TICK = 1 / FPS


class ClockedSource(Source):
    """A camera on the manual clock: frame 0 is captured at open, frame n >= 1 at open + (n + phase) ticks, stamped
    then. The output starts with the first frame, so its ticks fall on whole ticks from open: later frames come
    between two of them (with `phase` 0 a capture and a send would happen at the same instant, a race)."""

    description = "clocked camera"

    def __init__(self, clock: ManualClock, phase: float = 0.5) -> None:
        self.clock, self.phase = clock, phase
        self.start = 0.0
        self.frames = 0
        self._size, self._fps = (W, H), FPS
        self._stop = threading.Event()

    def open(self) -> None:
        self.start = self.clock.now()

    def read(self) -> Frame:
        due = self.start + (self.frames + self.phase) * TICK if self.frames else self.start
        self.clock.wait(due - self.clock.now(), self._stop)
        image = np.full((H, W, 3), self.frames % 256, np.uint8)
        self.frames += 1
        return Frame(image, self.clock.now(), self.frames - 1)

    def close(self) -> None:
        self._stop.set()


class CostlyDelayedTranslator(Translator):
    """Each call takes `cost_s` on the clock and returns the input of `delay` calls ago (None before it has one)."""

    name = "fake"

    def __init__(self, clock: ManualClock, cost_s: float, delay: int) -> None:
        self.clock, self.cost_s, self.delay = clock, cost_s, delay
        self.history: list[np.ndarray] = []
        self.calls = 0
        self.stop = threading.Event()  # set by the test before it stops the runtime: ends a call's wait

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        self.calls += 1
        self.clock.wait(self.cost_s, self.stop)
        self.history = [*self.history[-self.delay :], image]
        return self.history[0] if len(self.history) > self.delay else None

    @property
    def latency_frames(self) -> int:
        return self.delay


def run_on_manual_clock(delay: int, cost_ticks: float, ticks: int, delay_ms: int = 0) -> tuple[Status, list[float]]:
    """Run the runtime with the fake model for `ticks` output ticks; returns its status and the send times."""
    clock = ManualClock()
    source = ClockedSource(clock)
    translator = CostlyDelayedTranslator(clock, cost_ticks * TICK, delay)
    sink = RecordingSink(clock)
    runtime = Runtime(
        source,
        [sink],
        width=W,
        height=H,
        fps=FPS,
        style="fake",
        translator_loader=lambda name: translator,
        clock=clock,
        delay_ms=delay_ms,
    )

    def waiters() -> int:
        """The capture thread waits on the clock; from the first frame shown the output thread too; once the model
        was called, its calls too."""
        return 3 if translator.calls else 2 if source.frames else 1

    def at_a_capture() -> bool:
        ticks_since_open = (clock.now() - source.start) / TICK
        return source.frames > 1 and abs(ticks_since_open - round(ticks_since_open) - 0.5) < 1e-6

    runtime.start()
    try:
        # the style loads once `vcam.style_switch.RECENT_FRAMES` camera frames came to warm it on: from the first
        # capture after the output started, move the clock from capture to capture until the model's first call,
        # so its calls (back to back) start at captures
        while not at_a_capture():
            clock.advance_to(clock.wait_for_waiters(waiters))
        while not translator.calls:
            clock.wait_for_waiters(waiters)
            clock.advance_to(clock.now() + TICK)
        end = clock.now() + ticks * TICK  # the start-up's frames leave the status's 3 s window
        while clock.now() < end:
            clock.advance_to(clock.wait_for_waiters(waiters))
        clock.wait_for_waiters(3)
        status = runtime.status()
    finally:
        source.close()  # the threads wait on the clock: end their waits, then stop
        translator.stop.set()
        runtime.stop()
    return status, sink.times


def test_frame_timing_stages_add_up_to_the_latency() -> None:
    timing = FrameTiming(capture=10.0, work_start=10.02, segmented=10.03, translated=10.13, composited=10.135)
    stages = timing.stages_ms(sent=10.15)
    assert list(stages) == list(LATENCY_STAGES)
    assert stages == pytest.approx(
        {"queue": 20.0, "segment": 10.0, "translate": 100.0, "composite": 5.0, "send_wait": 15.0}
    )
    assert sum(stages.values()) == pytest.approx(150.0)


def test_meter_figures_cover_only_the_window() -> None:
    meter = LatencyMeter(window_s=1.0)
    for n in range(10):  # an old, slow stretch: 500 ms latency at 2 fps
        meter.record(FrameTiming(n * 0.5, n * 0.5, n * 0.5, n * 0.5, n * 0.5), n * 0.5 + 0.5)
    for n in range(21):  # then 20 fps with 100 ms latency
        c = 10.0 + n * 0.05
        meter.record(FrameTiming(c, c + 0.01, c + 0.01, c + 0.09, c + 0.09), c + 0.1)
    figures = meter.figures(now=11.1)
    assert figures.fps_content == pytest.approx(20.0)
    assert figures.latency_ms_p50 == pytest.approx(100.0)
    assert figures.latency_ms_p95 == pytest.approx(100.0)
    assert figures.stages_ms == pytest.approx(
        {"queue": 10.0, "segment": 0.0, "translate": 80.0, "composite": 0.0, "send_wait": 10.0}
    )
    assert LatencyMeter().figures(now=0.0).latency_ms_p50 == 0.0
    # the status computes its figures from a snapshot, outside the runtime's lock: later frames do not change it
    snapshot = meter.snapshot()
    meter.record(FrameTiming(11.0, 11.0, 11.0, 11.9, 11.9), 11.95)
    assert snapshot.figures(now=11.1) == figures
    assert meter.figures(now=11.95).latency_ms_p95 == pytest.approx(950.0)


def test_frame_stats_snapshot_gives_the_same_figures_and_stays_as_taken() -> None:
    stats = FrameStats()
    for n in range(90):
        stats.captured.append(n / 30)
        stats.sent.append(n / 30 + 0.01)
        stats.latency_ms.append(10.0 + n % 7)
        stats.translate_ms.append(5.0 + n % 3)
    stats.frames_out, stats.dropped, stats.repeated = 90, 2, 3
    snapshot = stats.snapshot()
    assert snapshot.figures(now=3.0) == stats.figures(now=3.0)
    stats.sent.append(3.0)
    stats.frames_out += 1
    assert snapshot.frames_out == 90 and len(snapshot.sent) == 90


@pytest.mark.parametrize(("delay", "cost_ticks"), [(0, 2.0), (2, 2.0), (3, 3.0)])
def test_runtime_measures_a_model_of_known_delay_and_cost(delay: int, cost_ticks: float) -> None:
    """A model that takes `cost_ticks` frame intervals per call and answers `delay` calls late: calls run back to
    back from the first capture (at half a tick), each frame is sent at the next output tick (half a tick later),
    so latency = cost x (delay + 1) + 0.5 tick + the queueing (0 or 1 tick: which of two frames captured at the
    same instant as a call ends it takes is a race). Everything else is exact."""
    status, _ = run_on_manual_clock(delay, cost_ticks, ticks=180)
    low = (cost_ticks * (delay + 1) + 0.5) * TICK * 1000
    assert low - 0.1 <= status.latency_ms_p50 <= low + TICK * 1000 + 0.1, status
    assert low - 0.1 <= status.latency_ms_p95 <= low + TICK * 1000 + 0.1, status
    assert status.fps_content == pytest.approx(FPS / cost_ticks, abs=0.01)
    stages = status.latency_stages_ms
    assert stages["translate"] == pytest.approx(cost_ticks * (delay + 1) * TICK * 1000, abs=0.1)
    assert stages["send_wait"] == pytest.approx(0.5 * TICK * 1000, abs=0.1)
    assert stages["segment"] == pytest.approx(0.0, abs=0.1) and stages["composite"] == pytest.approx(0.0, abs=0.1)
    assert 0.0 <= stages["queue"] <= TICK * 1000 + 0.1
    assert status.translate_ms == pytest.approx(cost_ticks * TICK * 1000, abs=0.1)
    assert status.fps_out == pytest.approx(FPS, abs=0.01)  # the output rate, repeats included
    assert status.audio_delay_ms == audio_delay_ms(status.latency_ms_p50)


def test_a_fixed_output_delay_holds_the_latency_exactly() -> None:
    """With `delay_ms` 150 (4.5 ticks) a frame captured at a half tick is due at a whole tick: every new frame is
    sent exactly 150 ms after its capture, though the model alone would show it after 83 or 117 ms."""
    status, _ = run_on_manual_clock(0, 2.0, ticks=180, delay_ms=150)
    assert status.latency_ms_p50 == pytest.approx(150.0, abs=0.1)
    assert status.latency_ms_p95 == pytest.approx(150.0, abs=0.1)
    # holding delays frames, it drops none (the window's ends move by the capture race's tick: 1 tick in 3 s)
    assert status.fps_content == pytest.approx(FPS / 2, abs=0.4)
    assert status.delay_ms == 150


def test_pick_delayed_takes_the_newest_frame_old_enough() -> None:
    class Held:
        def __init__(self, capture: float) -> None:
            self.timing = FrameTiming(capture)

    frames = [Held(1.0), Held(1.1), Held(1.2)]
    assert pick_delayed(frames, now=1.25, delay_ms=100) is frames[1]
    assert pick_delayed(frames, now=1.15, delay_ms=100) is frames[0]
    assert pick_delayed(frames, now=1.3, delay_ms=100) is frames[2]
    assert pick_delayed(frames, now=1.05, delay_ms=100) is None
    assert pick_delayed(frames, now=1.2, delay_ms=0) is frames[2]


def test_audio_delay_is_the_latency_plus_the_users_offset() -> None:
    assert audio_delay_ms(183.4) == 180
    assert audio_delay_ms(183.4, offset_ms=40) == 220
    assert audio_delay_ms(20.0, offset_ms=-100) == 0
    hint = audio_delay_hint(180)
    assert "180 ms" in hint and "Sync Offset" in hint and "audio_offset_ms" in hint


def test_webcam_frames_carry_the_drivers_timestamp_when_it_has_one() -> None:
    world = FakeCameraWorld({0: FakeCamera(buffer_age_s=0.05), 1: FakeCamera()})
    with_driver = WebcamSource(0, 640, 480, 30, capture_factory=world.factory)
    without = WebcamSource(1, 640, 480, 30, capture_factory=world.factory)
    with_driver.open()
    without.open()
    try:
        with_driver.read()  # the frame read at open
        without.read()
        before = time.monotonic()
        stamped = with_driver.read().timestamp
        plain = without.read().timestamp
        after = time.monotonic()
    finally:
        with_driver.close()
        without.close()
    assert before - 0.05 <= stamped <= after - 0.05  # the buffer's time, 50 ms before the read returned it
    assert before <= plain <= after  # no driver timestamp: the time of the read


def test_the_last_measurement_round_trips_and_a_broken_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "latency.json"
    assert load_measurement(path) is None
    measurement = Measurement(120.5, 150.0, 14.8, "tiny-random", "demo", "2026-12-01T10:00:00+0000", "vcam bench")
    save_measurement(measurement, path)
    assert load_measurement(path) == measurement
    path.write_text("{not json", encoding="utf-8")
    assert load_measurement(path) is None


def test_doctor_shows_the_last_measurement_or_how_to_measure() -> None:
    from vcam.doctor import check_latency

    missing = check_latency()
    assert missing.ok and "vcam bench latency" in missing.detail
    save_measurement(Measurement(183.0, 240.0, 14.9, "toon", "demo", "2026-12-01T10:00:00+0000", "vcam run"))
    shown = check_latency()
    assert shown.ok and "183 ms p50" in shown.detail and "about 180 ms" in shown.detail
    assert "Sync Offset" in shown.detail


def test_a_slow_model_is_measured_over_its_last_frames() -> None:
    meter = LatencyMeter(window_s=3.0)
    for n in range(4):  # one frame every 2 s, each 2.5 s late
        meter.record(FrameTiming(n * 2.0), n * 2.0 + 2.5)
    figures = meter.figures(now=9.0)  # only one frame in the last 3 s
    assert figures.fps_content == pytest.approx(0.5)
    assert figures.latency_ms_p50 == pytest.approx(2500.0)


def test_the_run_log_line_and_the_kept_measurement() -> None:
    from vcam.commands.run import MIN_FRAMES_MEASURED, keep_measurement, latency_line

    status = Status(
        style="toon",
        source="demo",
        fps_out=30.0,
        fps_content=14.6,
        latency_ms_p50=183.0,
        latency_ms_p95=240.0,
        latency_stages_ms={"queue": 5.0, "translate": 170.0},
        audio_delay_ms=180,
        profile="auto",
        profile_settings="t1-448x256-taesd",
        frames_out=MIN_FRAMES_MEASURED,
    )
    assert latency_line(status) == (
        "14.6 styled fps (30 sent); latency p50 183 ms, p95 240 ms (queue 5, translate 170 ms); "
        "audio delay to set: 180 ms; profile t1-448x256-taesd"
    )
    keep_measurement(status)
    kept = load_measurement()
    assert kept is not None and (kept.latency_ms_p50, kept.style, kept.how) == (183.0, "toon", "vcam run")
