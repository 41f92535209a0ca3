"""The runtime's output thread: sends to every sink at exactly the output fps, whatever the model does.

Each tick it sends the newest finished frame (repeating it when none is new), or with a fixed `delay_ms` the
newest one captured at least that long ago, so the delay does not wander with the model's speed. A new
frame's latency and stage times go to the `vcam.latency.LatencyMeter`; every 15 ticks the status listeners
hear about changes and the auto profile judges the content rate. A sink that fails is closed and dropped
with its error in the status; only when every sink has failed does the runtime stop with an error.
`vcam.runtime.Runtime` mixes this in; the attributes below are the runtime's.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from vcam.clock import Clock
from vcam.errors import UserError
from vcam.frame_stats import FrameStats
from vcam.imaging import slate
from vcam.latency import FrameTiming, LatencyMeter, pick_delayed
from vcam.sources.pacing import FramePacer

if TYPE_CHECKING:
    from vcam.profile import ProfileController, ProfileSettings
    from vcam.sinks.base import Sink
    from vcam.translators.base import Translator

log = logging.getLogger(__name__)

#: output ticks between two status notifications (and auto-profile judgements)
NOTIFY_EVERY_TICKS = 15


class OutputThread:
    """The output thread's part of `vcam.runtime.Runtime` (a mixin: it works on the runtime's state)."""

    width: int
    height: int
    fps: float
    sinks: list[Sink]
    _failed_sinks: list[Sink]
    _clock: Clock
    _stop: threading.Event
    _done: threading.Event
    _lock: threading.Lock
    _paused: bool
    _camera_lost: bool
    _published: Any  # vcam.runtime._Published | None
    _history: deque[Any]
    _delay_ms: int
    _stats: FrameStats
    _latency: LatencyMeter
    _max_frames: int | None
    _last_error: str | None
    _loading: set[str]
    _pending: Any
    _translator: Translator
    _style: str
    _profile: ProfileController | None

    if TYPE_CHECKING:  # the runtime's methods this part calls

        def _notify(self) -> None: ...
        def _fail(self, message: str) -> None: ...
        def _set_error(self, message: str) -> None: ...
        def set_style(self, name: str, settings: ProfileSettings | None = None) -> None: ...
        @staticmethod
        def _close_quietly(thing: Any) -> None: ...

    def _frame_to_send(self, last_serial: int, now: float) -> tuple[np.ndarray, int, FrameTiming | None]:
        """The image for this tick, its serial (0 for slates) and its input's timing if it is new. With a fixed
        `delay_ms`, the newest frame captured at least that long ago (the previous one until one is)."""
        with self._lock:
            paused, lost, published = self._paused, self._camera_lost, self._published
            if self._delay_ms > 0 and published is not None:
                held = pick_delayed(self._history, now, self._delay_ms)
                last = next((p for p in self._history if p.serial == last_serial), None)
                published = held or last or published
        if paused:
            return slate(self.width, self.height, "Camera paused", "privacy mode: your camera is not shown"), 0, None
        if lost:
            return slate(self.width, self.height, "Camera unavailable", "reconnecting..."), 0, None
        if published is None:
            return slate(self.width, self.height, "Starting camera", "live2diff-vcam"), 0, None
        is_new = published.serial != last_serial
        return published.image, published.serial, published.timing if is_new else None

    def _output_loop(self) -> None:
        pacer = FramePacer(self.fps, self._clock, stop=self._stop)  # far behind (suspended?): it restarts the clock
        tick = 0
        last_serial = -1
        while not self._stop.is_set():
            if not pacer.wait(tick):
                break
            image, serial, timing = self._frame_to_send(last_serial, self._clock.now())
            self._send_to_sinks(image)
            if self._stop.is_set():
                break
            now = self._clock.now()
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
            last_serial = serial
            tick += 1
            if tick % NOTIFY_EVERY_TICKS == 0 or tick == 1:
                self._notify()
                self._adapt_profile(now)
            if done:
                self._done.set()
                return

    def _send_to_sinks(self, image: np.ndarray) -> None:
        """Send to every working sink; a failing sink is closed and dropped, the others keep going."""
        for sink in self.sinks:
            if sink in self._failed_sinks:
                continue
            try:
                sink.send(image)
            except Exception as error:
                self._drop_sink(sink, error)
        if len(self._failed_sinks) == len(self.sinks):
            self._fail(f"every output failed; the last: {self._last_error}")

    def _drop_sink(self, sink: Sink, error: Exception) -> None:
        log.error(
            "output %s failed and was stopped: %s", sink.description, error, exc_info=not isinstance(error, UserError)
        )
        with self._lock:
            self._failed_sinks.append(sink)
        self._close_quietly(sink)
        others = [s.description for s in self.sinks if s not in self._failed_sinks]
        still = f"; still sending to {', '.join(others)}" if others else ""
        self._set_error(f"output {sink.description} failed and was stopped: {error}{still}")

    def _adapt_profile(self, now: float) -> None:
        """Let the auto profile judge the content rate; it may reload the live style at other settings."""
        if self._profile is None:
            return
        with self._lock:
            steady = not (self._loading or self._pending or self._paused or self._camera_lost)
            steady = steady and not self._translator.warming_up
            fps = self._latency.figures(now).fps_content
            call_ms = float(np.median(self._stats.translate_ms)) if self._stats.translate_ms else 0.0
        settings = self._profile.observe(now, fps, steady, call_ms)
        if settings is not None:
            self.set_style(self._style, settings)
