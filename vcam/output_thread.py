"""The runtime's output thread: sends to every sink at exactly the output fps, whatever the model does.

It starts with the first camera frame (or a slate after `STARTUP_WAIT_S`). Each tick it sends the newest
finished frame (repeating it when none is new), or with a fixed `delay_ms` the newest one captured at least
that long ago, so the delay does not wander with the model's speed; a new look fades in by the clock
(`vcam.style_switch.Crossfade`). A new frame's latency and stage times go to the `vcam.latency.LatencyMeter`;
every 15 ticks the status listeners hear about changes and the auto profile judges the content rate. A sink
that fails is closed and dropped with its error in the status (`vcam.sinks.fanout`); only when every sink has
failed does the runtime stop with an error.
`vcam.runtime.Runtime` mixes this in; the attributes below are the runtime's.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from vcam.clock import Clock
from vcam.frame_stats import FrameStats
from vcam.imaging import slate
from vcam.latency import FrameTiming, LatencyMeter, pick_delayed
from vcam.sources.pacing import FramePacer
from vcam.style_switch import Crossfade

if TYPE_CHECKING:
    from vcam.output_gate import OutputGate
    from vcam.profile import ProfileController, ProfileSettings
    from vcam.sinks.fanout import SinkFanout
    from vcam.style_switch import StyleLoads
    from vcam.translators.base import Translator

log = logging.getLogger(__name__)

#: output ticks between two status notifications (and auto-profile judgements)
NOTIFY_EVERY_TICKS = 15
#: the longest the output waits for the first camera frame before showing the "Starting camera" slate
STARTUP_WAIT_S = 2.0


class OutputThread:
    """The output thread's part of `vcam.runtime.Runtime` (a mixin: it works on the runtime's state)."""

    width: int
    height: int
    fps: float
    _outputs: SinkFanout
    _clock: Clock
    _stop: threading.Event
    _done: threading.Event
    _lock: threading.Lock
    _paused: bool
    _camera_lost: bool
    _first_frame: threading.Event
    _published: Any  # vcam.runtime._Published | None
    _history: deque[Any]
    _delay_ms: int
    _stats: FrameStats
    _latency: LatencyMeter
    _max_frames: int | None
    _last_error: str | None
    _loads: StyleLoads
    _gate: OutputGate
    _translator: Translator
    _style: str
    _profile: ProfileController | None

    if TYPE_CHECKING:  # the runtime's methods this part calls

        def _notify(self) -> None: ...
        def _fail(self, message: str) -> None: ...
        def set_style(self, name: str, settings: ProfileSettings | None = None) -> None: ...

    def _frame_to_send(
        self, last_serial: int, now: float, crossfade: Crossfade, last_slate: np.ndarray | None
    ) -> tuple[np.ndarray, int, FrameTiming | None]:
        """The image for this tick, its serial (0 for slates) and its input's timing if it is new. With a fixed
        `delay_ms`, the newest frame captured at least that long ago (the previous one until one is)."""
        with self._lock:
            paused, lost, published = self._paused, self._camera_lost, self._published
            if self._delay_ms > 0 and published is not None:
                held = pick_delayed(self._history, now, self._delay_ms)
                last = next((p for p in self._history if p.serial == last_serial), None)
                published = held or last or published
        if paused or lost or published is None:
            crossfade.cancel()
        if paused:
            return slate(self.width, self.height, "Camera paused", "privacy mode: your camera is not shown"), 0, None
        if lost:
            return slate(self.width, self.height, "Camera unavailable", "reconnecting..."), 0, None
        if published is None:  # starting, or just after a break: the card shown before it stays until a frame
            starting = slate(self.width, self.height, "Starting camera", "live2diff-vcam")
            return (last_slate if last_slate is not None else starting), 0, None
        is_new = published.serial != last_serial
        if published.fade is not None and published.fade[0] != crossfade.switch:
            crossfade.switch = published.fade[0]
            crossfade.start(published.fade[1], now)
        image = crossfade.apply(published.image, now)
        return image, published.serial, published.timing if is_new else None

    def _wait_for_first_frame(self) -> None:
        """Start sending with the first camera frame (or a slate: camera lost, paused, `STARTUP_WAIT_S` passed)."""
        started = self._clock.now()
        while not self._first_frame.wait(0.01) and not self._stop.is_set() and not self._paused:
            if self._clock.now() - started >= STARTUP_WAIT_S:
                return

    def _output_loop(self) -> None:
        try:
            self._send_loop()
        finally:
            self._gate.open()  # no frame to give way to any more

    def _send_loop(self) -> None:
        self._wait_for_first_frame()
        pacer = FramePacer(self.fps, self._clock, stop=self._stop)  # far behind (suspended?): it restarts the clock
        crossfade = Crossfade()
        tick = 0
        last_serial = -1
        last_slate: np.ndarray | None = None  # the card sent last, if the last frame sent was a card
        while not self._stop.is_set():
            self._gate.expect(pacer.due(tick))  # background model work waits from just before it until it is sent
            if not pacer.wait(tick):
                break
            image, serial, timing = self._frame_to_send(last_serial, self._clock.now(), crossfade, last_slate)
            last_slate = image if serial == 0 else None
            if not self._outputs.send(image):
                self._fail(f"every output failed; the last: {self._last_error}")
                break
            now = self._clock.now()  # the frame reached the sinks: it is counted even when a stop came meanwhile
            with self._lock:
                stats = self._stats
                stats.frames_out += 1
                stats.sent.append(now)
                if timing is not None:
                    stats.latency_ms.append((now - timing.capture) * 1000)
                    self._latency.record(timing, now)
                elif serial != 0:
                    stats.repeated += 1
                done = self._max_frames is not None and stats.frames_out >= self._max_frames
            if self._stop.is_set():
                break
            last_serial = serial
            tick += 1
            if tick % NOTIFY_EVERY_TICKS == 0 or tick == 1:
                self._notify()
                self._adapt_profile(now)
            if done:
                self._done.set()
                return

    def _adapt_profile(self, now: float) -> None:
        """Let the auto profile judge the content rate; it may reload the live style at other settings."""
        if self._profile is None:
            return
        with self._lock:
            steady = not (self._loads.loading() or self._loads.has_pending or self._paused or self._camera_lost)
            steady = steady and not self._translator.warming_up
            latency, translate_ms = self._latency.snapshot(), self._stats.translate_ms.copy()
        fps = latency.figures(now).fps_content
        call_ms = float(np.median(translate_ms)) if translate_ms else 0.0
        settings = self._profile.observe(now, fps, steady, call_ms)
        if settings is not None:
            self.set_style(self._style, settings)
