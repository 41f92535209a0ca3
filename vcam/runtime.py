"""The frame loop: capture -> work (segment, translate, composite) -> output at a fixed fps.

Three threads, stopped by one `threading.Event`:
- capture: reads the source and keeps only the newest frame (a slow model never builds a
  backlog); when the camera is lost it reconnects with backoff while the output shows a slate.
- work: takes the newest frame, segments it, translates it (the current style), composites, and
  publishes the result. A style switch loads in a background thread while the old style keeps
  running (`vcam.style_switch`: nothing the output thread needs is held by the load), is warmed on
  the latest real camera frames, then swaps atomically between two frames. At start-up the camera
  image flows while the configured style loads. A pause, resume or reconnect is a break: nothing
  captured or in flight before it is shown after it.
- output: sends to every sink at exactly the output fps from the first camera frame on, repeating
  the newest finished frame when none is new (paced by `FramePacer`, the sources' rule), and
  crossfades a new look in by time: a meeting app never sees the camera stall, whatever the model
  does. With `delay_ms` it holds a fixed capture-to-send delay instead. A sink that fails (disk
  full, device gone) is closed and dropped with its error in the status; the others keep going, and
  only when every sink has failed does the runtime stop with an error (`vcam.output_thread`).
Every frame carries a `FrameTiming` from capture to send (`vcam.latency`); a `ProfileController`
(`vcam.profile`) chooses and adapts the model settings of the styles loaded.
A source that fails in an unexpected way is treated like an unplugged camera (slate, reconnect).
Control (`set_style`, `set_segment`, `pause`, `resume`, `stop`) is thread-safe; `status()` is one
snapshot. The runtime knows the model only through the `Translator` contract; `vcam.assemble` builds it
from the config.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vcam.clock import SYSTEM_CLOCK, Clock
from vcam.errors import SourceUnavailable, UserError
from vcam.frame_stats import FrameStats
from vcam.gc_policy import freeze_survivors
from vcam.imaging import fit_cover
from vcam.latency import FrameTiming, LatencyMeter, history_length, latency_status
from vcam.output_gate import OutputGate
from vcam.output_thread import OutputThread
from vcam.segment.delay import DelayLine
from vcam.sinks.fanout import SinkFanout
from vcam.sources.base import Source
from vcam.status import State, Status
from vcam.style_switch import RECENT_FRAMES, StyleLoads
from vcam.translators.base import Translator
from vcam.translators.passthrough import PassthroughTranslator

if TYPE_CHECKING:
    from vcam.profile import ProfileController, ProfileSettings
    from vcam.segment.stage import SegmentationStage
    from vcam.sinks.base import Sink

log = logging.getLogger(__name__)

TranslatorLoader = Callable[[str], Translator]
StatusListener = Callable[[Status], None]

#: the classic look shown when the configured diffusion style cannot load
FALLBACK_STYLE = "cartoon"
#: the interpreter's thread switch interval while a runtime runs: short, so the output thread gets the
#: GIL within a millisecond of its deadline even while the work thread runs Python-heavy code
SWITCH_INTERVAL_S = 0.001


@dataclass
class _Published:
    """The newest finished frame, as the output thread sees it."""

    image: np.ndarray  # [h, w, 3] uint8 RGB, output size
    timing: FrameTiming  # of the input it derives from: its capture time and stage times
    serial: int  # increments with every new frame
    fade: tuple[int, np.ndarray] | None = None  # (serial of the new look's first frame, the frame it fades in from)


class Runtime(OutputThread):
    """Runs a source through a translator into sinks; see the module docstring."""

    def __init__(
        self,
        source: Source,
        sinks: Sequence[Sink],
        *,
        width: int = 1280,
        height: int = 720,
        fps: float = 30.0,
        style: str = "passthrough",
        translator_loader: TranslatorLoader | None = None,
        segmentation: SegmentationStage | None = None,
        segmentation_factory: Callable[[str], SegmentationStage] | None = None,
        fallback_style: str = FALLBACK_STYLE,
        clock: Clock = SYSTEM_CLOCK,
        delay_ms: int = 0,
        audio_offset_ms: int = 0,
        profile: ProfileController | None = None,
        preload: Callable[[], None] | None = None,
    ) -> None:
        """`clock` paces the output and times every figure (sources stamp frames on the same scale); `delay_ms`
        holds the output at that capture-to-send delay (0: send the newest frame); `audio_offset_ms` is added to the
        measured latency for the audio delay the status advises (`vcam.latency`); `profile` chooses and adapts
        the model settings of the styles loaded (`vcam.profile`); `preload` runs in `start()` before the frame
        loop (`vcam.style_switch.preload_model_stack`)."""
        if not sinks:
            raise ValueError("a runtime needs at least one sink")
        self.source = source
        self.sinks = list(sinks)
        self._outputs = SinkFanout(self.sinks, self._set_error)  # drops a sink that fails
        self._failure: str | None = None  # why the runtime stopped itself (None: it did not)
        self.width, self.height, self.fps = width, height, fps
        self._loader: TranslatorLoader = translator_loader or (lambda name: PassthroughTranslator())
        self._segmentation = segmentation
        self._segmentation_factory = segmentation_factory
        self._initial_style = style
        self._clock = clock  # paces the output thread and times the figures (tests inject one and drive it)
        self._delay_ms, self._audio_offset_ms = delay_ms, audio_offset_ms
        self._profile = profile
        self._preload = preload

        self._stop = threading.Event()
        self._done = threading.Event()  # set when the output thread has sent `max_frames` or stopped
        self._lock = threading.Lock()
        self._new_frame = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._started = False
        self._stopped = False

        # capture -> work
        self._latest_input: tuple[np.ndarray, FrameTiming, int] | None = None  # (image, its times so far, epoch)
        self._epoch = 0  # the stream's epoch: a break (pause, resume, reconnect) starts a new one
        self._camera_lost = False
        # work -> output
        self._published: _Published | None = None
        self._history: deque[_Published] = deque(maxlen=history_length(delay_ms, fps))  # for `delay_ms`
        self._first_frame = threading.Event()  # the output starts on it (or a slate)
        # control
        self._translator: Translator = PassthroughTranslator()
        self._style = "passthrough"
        fallback = (style, fallback_style, lambda: self._style == "passthrough")
        self._gate = OutputGate(clock)  # the output announces each frame's time; loads give way around it
        self._loads = StyleLoads(
            self._loader,
            self._notify,
            self._style_failed,
            self._close_quietly,
            fallback,
            profile=profile,
            gate=self._gate,
        )
        self._paused = False
        self._forget_stream = False  # set on pause, resume and reconnect: the work thread resets the translator
        self._last_error: str | None = None
        self._clears_style_error = True  # False while the fallback look stands in for a failed style
        self._camera_until_styled = True  # show the plain camera image until the translator's first output
        self._fade_pending = False  # a switch happened: the next styled frame fades in
        self._fade: tuple[int, np.ndarray] | None = None  # the newest switch's fade, on every frame published since
        self._max_frames: int | None = None
        self._stats = FrameStats()
        self._latency = LatencyMeter()
        self._listeners: list[StatusListener] = []
        self._last_notified: tuple[Any, ...] | None = None
        self._preview_url: str | None = None
        # work thread: recent inputs with their masks, to pair a delayed translation with its own input
        self._delay_line = DelayLine(capacity=RECENT_FRAMES)

    # ------------------------------------------------------------------ lifecycle
    def start(self, max_frames: int | None = None) -> None:
        """Open the source and the sinks (errors propagate: bad input is the caller's to report),
        load the initial style in the background, and start the threads."""
        if self._started:
            raise RuntimeError("the runtime was already started")
        self._started = True
        self._max_frames = max_frames
        self.source.open()
        opened: list[Sink] = []
        try:
            for sink in self.sinks:
                sink.bind_status(lambda: self.status().to_dict())
                sink.open(self.width, self.height, self.fps)
                opened.append(sink)
                if sink.url is not None:
                    self._preview_url = sink.url
            if self._preload is not None:
                self._preload()  # imports hold the GIL: before the output runs, never during a load
        except BaseException:
            for sink in opened:
                self._close_quietly(sink)
            self.source.close()
            raise
        log.info("source: %s; sinks: %s", self.source.description, ", ".join(s.description for s in self.sinks))
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        freeze_survivors()  # what is alive now (imports, source, sinks) stays out of the collector's walks
        for target, name in (
            (self._capture_loop, "capture"),
            (self._work_loop, "work"),
            (self._output_loop, "output"),
        ):
            thread = threading.Thread(target=self._guard(target, name), name=f"vcam-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()
        if self._initial_style != "passthrough":
            self.set_style(self._initial_style)

    def wait(self, frames: int | None = None, timeout: float | None = None) -> bool:
        """Block until `frames` output frames were sent (or the runtime stopped); True if reached."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stop.is_set():
            if frames is not None and self._stats.frames_out >= frames:
                return True
            if self._done.wait(0.05):
                break
            if deadline is not None and time.monotonic() >= deadline:
                return False
        return frames is None or self._stats.frames_out >= frames

    def stop(self) -> None:
        """Stop the threads, close the sinks and the source, free the translator. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._stop.set()
            self._new_frame.notify_all()
        self._loads.close()  # a load still running frees what it built
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10)
        for sink in self._outputs.working():
            self._close_quietly(sink)
        self._close_quietly(self.source)
        self._close_quietly(self._translator)
        with self._lock:  # a stopped runtime holds no model: it may live on, e.g. frozen out of the collector's
            self._translator = PassthroughTranslator()  # view (`CollectorPause`) with the cycles its callbacks make
        if self._segmentation is not None:
            self._close_quietly(self._segmentation)
        self._notify()

    @property
    def failure(self) -> str | None:
        """Why the runtime stopped by itself (a thread failed, every sink failed); None if it did not."""
        return self._failure

    @property
    def frames_sent(self) -> int:
        """Output frames sent so far; read without a lock (the control API's health check)."""
        return self._stats.frames_out

    @property
    def running(self) -> bool:
        """False once stopping was asked for, or a runtime thread failed (see `status().last_error`)."""
        return self._started and not self._stop.is_set()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _close_quietly(thing: Any) -> None:
        try:
            thing.close()
        except Exception:  # closing must not hide the error that led here
            log.exception("error while closing %r", thing)

    def _guard(self, target: Callable[[], None], name: str) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception as error:
                log.exception("the %s thread failed", name)
                self._fail(f"{name} thread failed: {error}")

        return run

    def _fail(self, message: str) -> None:
        """Stop the runtime by itself with `message` as the error (the caller sees `failure`)."""
        with self._lock:
            self._failure = message
        self._set_error(message)
        self._stop.set()
        self._done.set()

    # ------------------------------------------------------------------ control
    def set_style(self, name: str, settings: ProfileSettings | None = None) -> None:
        """Load style `name` in the background (at the profile `settings`, else as the profile mode says); the
        current style keeps running until it is ready."""
        self._loads.request(name, settings)
        self._notify()

    def _style_failed(self, error: str, falling_back: bool) -> None:
        if self._profile is not None:
            self._profile.request_failed()
        with self._lock:
            self._last_error = error
            if falling_back:
                self._clears_style_error = False  # the fallback look keeps saying how to get the style
        self._notify()

    def set_profile(self, mode: str) -> None:
        """Pin a profile (a rung id such as "t1-448x256-taesd"), or "auto", or "off" (the style's own settings); the
        live style reloads through the same no-stall switch as a style change."""
        if self._profile is None:
            raise UserError("profiles are not available in this runtime")
        settings = self._profile.set_mode(mode)  # ConfigError (a UserError) for a bad name
        self.set_style(self._style, settings)

    def set_segment(self, mode: str) -> None:
        """Switch the segmentation mode (off | person | background | blur | replace)."""
        try:
            if self._segmentation is None:
                if mode == "off":
                    return
                if self._segmentation_factory is None:
                    raise UserError("segmentation is not available in this runtime")
                stage = self._segmentation_factory(mode)
                with self._lock:
                    self._segmentation = stage
            else:
                self._segmentation.set_mode(mode)
        except UserError as error:
            self._set_error(str(error))
            raise
        self._notify()

    def pause(self) -> None:
        """Send a still privacy frame instead of the camera until `resume()`."""
        with self._lock:
            self._paused = True
            self._break_stream_locked()
        self._notify()

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._break_stream_locked()
        self._notify()

    def _break_stream_locked(self) -> None:
        """A break in the stream (pause, resume, reconnect): what was captured or in flight before it is never
        shown after it (the work thread drops older inputs and resets the translator and the delay line)."""
        self._epoch += 1
        self._forget_stream = True
        self._latest_input = None
        self._loads.forget_frames()
        self._published = None
        self._history.clear()

    def add_status_listener(self, listener: StatusListener) -> None:
        """Call `listener(status)` (from a runtime thread) when the state, style, mode or error change."""
        with self._lock:
            self._listeners.append(listener)

    def report_problem(self, message: str) -> None:
        """Show `message` as the status's `last_error` (e.g. a saved setting the camera started without)."""
        self._set_error(message)

    def _set_error(self, message: str) -> None:
        with self._lock:
            self._last_error = message
        self._notify()

    # ------------------------------------------------------------------ status
    def status(self) -> Status:
        now = self._clock.now()
        with self._lock:
            stats, latency = self._stats.snapshot(), self._latency.snapshot()
            translator = self._translator
            pending = self._loads.pending_translator()
            holding = [translator] if pending is None else [translator, pending]
            loading = self._loads.loading()
            state: State
            if self._stopped:
                state = "stopped"
            elif self._started and self._stop.is_set():
                state = "error"  # a runtime thread failed: last_error says why
            elif self._paused:
                state = "paused"
            elif self._camera_lost:
                state = "reconnecting"
            elif loading:
                state = "loading_style"
            elif stats.frames_out == 0:
                state = "starting"
            elif translator.warming_up:
                state = "warming_up"
            else:
                state = "running"
            segment_mode = self._segmentation.mode if self._segmentation is not None else "off"
            style, delay_ms, last_error = self._style, self._delay_ms, translator.problem or self._last_error
            audio_offset_ms = self._audio_offset_ms
        # outside the runtime's lock, which the output thread takes every tick: the figures' Python work, and what
        # other components answer under their own locks (the model pool's, the profile's)
        figures = {**stats.figures(now), **latency_status(latency.figures(now), audio_offset_ms)}
        profile, rung, rungs = self._profile.describe() if self._profile is not None else ("off", "", ())
        return Status(
            state=state,
            style=style,
            segment=segment_mode,
            source=self.source.description,
            sinks=tuple(sink.description for sink in self._outputs.working()),
            **figures,
            delay_ms=delay_ms,
            profile=profile,
            profile_settings=rung,
            profiles=rungs,
            last_error=last_error,
            preview_url=self._preview_url,
            styles_loading=loading,
            model_memory_mb=round(max(held.resident_memory_mb() for held in holding), 1),
        )

    def _notify(self) -> None:
        status = self.status()
        key = (status.state, status.style, status.segment, status.last_error, status.styles_loading)
        with self._lock:
            if key == self._last_notified:
                return
            self._last_notified = key
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(status)
            except Exception:
                log.exception("a status listener failed")

    # ------------------------------------------------------------------ capture thread
    def _capture_loop(self) -> None:
        from vcam.sources.reconnect import Backoff

        backoff = Backoff()
        while not self._stop.is_set():
            epoch = self._epoch  # read before the frame: one captured across a break belongs to the old stream
            try:
                frame = self.source.read()
            except SourceUnavailable as error:
                self._reconnect(error, backoff)
                continue
            except Exception as error:  # a file deleted or a driver fault: reconnect rather than stop the camera
                log.exception("reading %s failed", self.source.description)
                self._reconnect(error, backoff)
                continue
            backoff.reset()
            with self._lock:
                if self._latest_input is not None:
                    self._stats.dropped += 1  # the work thread never saw the previous one
                self._latest_input = (frame.image, FrameTiming(capture=frame.timestamp), epoch)
                self._stats.captured.append(self._clock.now())
                self._new_frame.notify_all()

    def _reconnect(self, error: Exception, backoff: Any) -> None:
        with self._lock:
            first = not self._camera_lost
            self._camera_lost = True
            self._latest_input = None
            self._first_frame.set()  # the output shows the slate
        if first:
            log.warning("camera unavailable (%s); reconnecting", error)
            self._notify()
        self._close_quietly(self.source)
        while not self._stop.is_set():
            if self._stop.wait(backoff.next_delay()):
                return
            try:
                self.source.open()
            except Exception as retry_error:  # still gone (or broken): keep the slate and try again later
                log.debug("reconnect failed: %s", retry_error, exc_info=not isinstance(retry_error, UserError))
                continue
            log.warning("camera back: %s", self.source.description)
            with self._lock:
                self._camera_lost = False
                self._break_stream_locked()
            self._notify()
            return

    # ------------------------------------------------------------------ work thread
    def _take_input(self) -> tuple[np.ndarray, FrameTiming, int] | None:
        with self._lock:
            while self._latest_input is None and not self._stop.is_set():
                self._new_frame.wait(0.1)
                if self._loads.has_pending:
                    break
            if self._latest_input is None:
                return None
            taken, self._latest_input = self._latest_input, None
        taken[1].work_start = self._clock.now()
        return taken

    def _swap_pending(self) -> None:
        pending = self._loads.take_pending()
        if pending is None:
            return
        name, translator = pending
        with self._lock:
            old, self._translator = self._translator, translator
            self._style = name
            if self._clears_style_error and self._last_error is not None and self._last_error.startswith("style "):
                self._last_error = None  # a style that loaded clears the error of one that did not
            self._clears_style_error = True
            self._fade_pending = True  # the new look's first frame fades in from what is shown now
            self._camera_until_styled = old.name == "passthrough"  # the camera flows until the new look's first
            self._delay_line.clear()
        if self._profile is not None:
            self._profile.on_swap(translator, self._clock.now())
        log.info("style is now %r", name)
        if old is not translator:
            self._close_quietly(old)
        self._notify()

    def _work_loop(self) -> None:
        while not self._stop.is_set():
            if self._loads.has_pending:
                self._swap_pending()
            taken = self._take_input()
            if taken is None:
                continue
            raw, timing, epoch = taken
            image = fit_cover(raw, self.width, self.height)  # [h, w, 3] at the output size
            with self._lock:
                if epoch != self._epoch:
                    continue  # captured before a break
                self._loads.note_frame(image)  # what a new style is warmed on
                paused, forget = self._paused, self._forget_stream
                if not paused:
                    self._forget_stream = False
            if paused:
                continue
            if forget:
                self._translator.reset()  # the translator's temporal state must not blend across the gap
                self._delay_line.clear()  # outputs of inputs from before the gap are dropped
                self._camera_until_styled, self._fade = True, None
                if self._segmentation is not None:
                    self._segmentation.reset()  # the mask's temporal smoothing must not blend across the gap
            result = self._process(image, timing)
            if result is None:
                continue
            out, out_timing, styled = result
            with self._lock:
                if epoch != self._epoch:
                    continue  # a break happened while this frame was processed
                serial = self._published.serial + 1 if self._published else 1
                if styled and self._fade_pending:
                    self._fade_pending = False
                    self._fade = (serial, self._published.image) if self._published is not None else None
                out_timing.composited = now = self._clock.now()
                self._published = _Published(out, out_timing, serial, self._fade)
                self._history.append(self._published)
                self._stats.finished.append(now)
                self._first_frame.set()
        self._notify()

    def _process(self, image: np.ndarray, timing: FrameTiming) -> tuple[np.ndarray, FrameTiming, bool] | None:
        """Segment, translate and composite one frame: the output, the timing of its input, whether it is styled
        (False: the plain camera image, shown until a new translator's first output)."""
        clock, stage = self._clock, self._segmentation
        mask = None
        if stage is not None and stage.mode != "off":
            start = clock.now()
            mask = stage.mask(image, timing.capture)
            self._stats.segment_ms.append((clock.now() - start) * 1000)
        timing.segmented = clock.now()
        translator = self._translator
        if stage is not None and stage.mode != "off" and not stage.needs_translation:
            timing.translated = timing.segmented
            return stage.composite(image, None, mask), timing, True
        translated = translator(image)
        end = clock.now()
        self._stats.translate_ms.append((end - timing.segmented) * 1000)
        # the translation of the input `latency_frames` calls ago: composite it with that input's mask
        if translator.latency_frames >= self._delay_line.capacity:
            self._delay_line.resize(translator.latency_frames + 1)
        self._delay_line.push(image, mask, timing.capture, timing)
        entry = self._delay_line.get(translator.latency_frames) if translated is not None else None
        # nothing yet, or an output of an input from before a break (or before `latency_frames` inputs)
        if translated is None or entry is None or entry.timing is None:
            if not self._camera_until_styled:
                return None
            timing.translated = end
            return image, timing, False
        self._camera_until_styled = False
        entry.timing.translated = end
        if translated.shape != entry.image.shape:
            translated = fit_cover(translated, self.width, self.height)
        if stage is not None and stage.mode != "off":
            return stage.composite(entry.image, translated, entry.mask), entry.timing, True
        return translated, entry.timing, True
