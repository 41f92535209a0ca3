"""The frame loop: capture -> work (segment, translate, composite) -> output at a fixed fps.

Three threads, stopped by one `threading.Event`:
- capture: reads the source and keeps only the newest frame (a slow model never builds a
  backlog); when the camera is lost it reconnects with backoff while the output shows a slate.
- work: takes the newest frame, segments it, translates it (the current style), composites, and
  publishes the result. A style switch loads in a background thread while the old style keeps
  running (the collector paused: `vcam.gc_policy`), is warmed on the latest camera frames, then
  swaps atomically between two frames with a short crossfade.
- output: sends to every sink at exactly the output fps, repeating the newest finished frame when
  none is new (paced by `FramePacer`, the sources' rule): a meeting app never sees the camera stall,
  whatever the model does. A sink that fails (disk full, device gone) is closed and dropped with its
  error in the status; the others keep going, and only when every sink has failed does the runtime
  stop with an error.
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
from vcam.gc_policy import CollectorPause, freeze_survivors
from vcam.imaging import fit_cover
from vcam.latency import FrameTiming, LatencyMeter, history_length, latency_status
from vcam.output_thread import OutputThread
from vcam.segment.delay import DelayLine
from vcam.sources.base import Source
from vcam.status import State, Status
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
#: frames over which a style switch crossfades from the old look to the new one
CROSSFADE_FRAMES = 12
#: how many recent input frames are kept for a new style's warmup
RECENT_FRAMES = 8
#: the interpreter's thread switch interval while a runtime runs: short, so the output thread gets the
#: GIL within a millisecond of its deadline even while the work thread runs Python-heavy code
SWITCH_INTERVAL_S = 0.001


@dataclass
class _Published:
    """The newest finished frame, as the output thread sees it."""

    image: np.ndarray  # [h, w, 3] uint8 RGB, output size
    timing: FrameTiming  # of the input it derives from: its capture time and stage times
    serial: int  # increments with every new frame


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
    ) -> None:
        """`clock` paces the output and times every figure (sources stamp frames on the same scale); `delay_ms`
        holds the output at that capture-to-send delay (0: send the newest frame); `audio_offset_ms` is added to the
        measured latency for the audio delay the status advises (`vcam.latency`); `profile` chooses and adapts
        the model settings of the styles loaded (`vcam.profile`)."""
        if not sinks:
            raise ValueError("a runtime needs at least one sink")
        self.source = source
        self.sinks = list(sinks)
        self._failed_sinks: list[Sink] = []  # dropped after a failed send (closed already)
        self._failure: str | None = None  # why the runtime stopped itself (None: it did not)
        self.width, self.height, self.fps = width, height, fps
        self._loader: TranslatorLoader = translator_loader or (lambda name: PassthroughTranslator())
        self._segmentation = segmentation
        self._segmentation_factory = segmentation_factory
        self._fallback_style = fallback_style
        self._initial_style = style
        self._clock = clock  # paces the output thread and times the figures (tests inject one and drive it)
        self._delay_ms, self._audio_offset_ms = delay_ms, audio_offset_ms
        self._profile = profile

        self._stop = threading.Event()
        self._done = threading.Event()  # set when the output thread has sent `max_frames` or stopped
        self._lock = threading.Lock()
        self._new_frame = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._started = False
        self._stopped = False

        # capture -> work
        self._latest_input: tuple[np.ndarray, FrameTiming] | None = None  # (image, its times so far)
        self._camera_lost = False
        self._recent_inputs: deque[np.ndarray] = deque(maxlen=RECENT_FRAMES)
        # work -> output
        self._published: _Published | None = None
        self._history: deque[_Published] = deque(maxlen=history_length(delay_ms, fps))  # for `delay_ms`
        # control
        self._translator: Translator = PassthroughTranslator()
        self._style = "passthrough"
        self._pending: tuple[int, str, Translator] | None = None  # (generation, name, translator)
        self._load_generation = 0
        self._loading: set[str] = set()
        self._paused = False
        self._forget_stream = False  # set on pause, resume and reconnect: the work thread resets the translator
        self._last_error: str | None = None
        self._clears_style_error = True  # False while the fallback look stands in for a failed style
        self._crossfade_from: np.ndarray | None = None
        self._crossfade_step = 0
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
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10)
        for sink in self.sinks:
            if sink not in self._failed_sinks:
                self._close_quietly(sink)
        self._close_quietly(self.source)
        self._close_quietly(self._translator)
        if self._pending is not None:
            self._close_quietly(self._pending[2])
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
        with self._lock:
            self._load_generation += 1
            generation = self._load_generation
            self._loading.add(name)
        recent = list(self._recent_inputs)
        thread = threading.Thread(
            target=self._load_style, args=(generation, name, recent, settings), name=f"vcam-load-{name}", daemon=True
        )
        thread.start()
        self._notify()

    def _load_style(
        self, generation: int, name: str, recent: list[np.ndarray], settings: ProfileSettings | None = None
    ) -> None:
        try:
            with CollectorPause():
                profile = self._profile
                translator = profile.load(name, settings, recent) if profile is not None else self._loader(name)
                if recent:
                    translator.warmup(recent)  # fill the new style's temporal state on the latest camera frames
        except Exception as error:
            message = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
            if not isinstance(error, UserError):
                log.exception("style %r failed to load", name)
            self._style_failed(generation, name, message)
            return
        stale: Translator | None
        with self._lock:
            self._loading.discard(name)
            if generation != self._load_generation or self._stopped:
                stale = translator
            else:
                stale = self._pending[2] if self._pending is not None else None
                self._pending = (generation, name, translator)
        if stale is not None:
            self._close_quietly(stale)
        self._notify()

    def _style_failed(self, generation: int, name: str, message: str) -> None:
        log.warning("style %r could not be loaded: %s", name, message)
        if self._profile is not None:
            self._profile.request_failed()
        fall_back = False
        with self._lock:
            self._loading.discard(name)
            self._last_error = f"style {name!r} could not be loaded: {message}"
            fall_back = (
                generation == self._load_generation
                and self._style == "passthrough"
                and name == self._initial_style
                and name != self._fallback_style
            )
        if fall_back:
            log.warning("showing the classic %r look meanwhile", self._fallback_style)
            with self._lock:
                self._clears_style_error = False  # the fallback keeps saying how to get the style
            self.set_style(self._fallback_style)
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
            self._forget_stream = True
        self._notify()

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._forget_stream = True
        self._notify()

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
            stats = self._stats
            translator = self._translator
            holding = [translator] if self._pending is None else [translator, self._pending[2]]
            state: State
            if self._stopped:
                state = "stopped"
            elif self._started and self._stop.is_set():
                state = "error"  # a runtime thread failed: last_error says why
            elif self._paused:
                state = "paused"
            elif self._camera_lost:
                state = "reconnecting"
            elif self._loading:
                state = "loading_style"
            elif stats.frames_out == 0:
                state = "starting"
            elif translator.warming_up:
                state = "warming_up"
            else:
                state = "running"
            segment_mode = self._segmentation.mode if self._segmentation is not None else "off"
            figures = {**stats.figures(now), **latency_status(self._latency.figures(now), self._audio_offset_ms)}
            profile, rung, rungs = self._profile.describe() if self._profile is not None else ("off", "", ())
            return Status(
                state=state,
                style=self._style,
                segment=segment_mode,
                source=self.source.description,
                sinks=tuple(sink.description for sink in self.sinks if sink not in self._failed_sinks),
                **figures,
                delay_ms=self._delay_ms,
                profile=profile,
                profile_settings=rung,
                profiles=rungs,
                last_error=translator.problem or self._last_error,
                preview_url=self._preview_url,
                styles_loading=tuple(sorted(self._loading)),
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
                self._latest_input = (frame.image, FrameTiming(capture=frame.timestamp))
                self._stats.captured.append(self._clock.now())
                self._new_frame.notify_all()

    def _reconnect(self, error: Exception, backoff: Any) -> None:
        with self._lock:
            first = not self._camera_lost
            self._camera_lost = True
            self._latest_input = None
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
                self._forget_stream = True
            if self._segmentation is not None:
                self._segmentation.reset()  # the mask's temporal smoothing must not blend across the gap
            self._notify()
            return

    # ------------------------------------------------------------------ work thread
    def _take_input(self) -> tuple[np.ndarray, FrameTiming] | None:
        with self._lock:
            while self._latest_input is None and not self._stop.is_set():
                self._new_frame.wait(0.1)
                if self._pending is not None:
                    break
            if self._latest_input is None:
                return None
            taken, self._latest_input = self._latest_input, None
        taken[1].work_start = self._clock.now()
        return taken

    def _swap_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
            if pending is None:
                return
            _, name, translator = pending
            old, self._translator = self._translator, translator
            self._style = name
            if self._clears_style_error and self._last_error is not None and self._last_error.startswith("style "):
                self._last_error = None  # a style that loaded clears the error of one that did not
            self._clears_style_error = True
            if self._published is not None:
                self._crossfade_from = self._published.image
                self._crossfade_step = 0
            self._delay_line.clear()
        if self._profile is not None:
            self._profile.on_swap(translator, self._clock.now())
        log.info("style is now %r", name)
        if old is not translator:
            self._close_quietly(old)
        self._notify()

    def _work_loop(self) -> None:
        while not self._stop.is_set():
            if self._pending is not None:
                self._swap_pending()
            taken = self._take_input()
            if taken is None:
                continue
            raw, timing = taken
            image = fit_cover(raw, self.width, self.height)  # [h, w, 3] at the output size
            self._recent_inputs.append(image)
            if self._paused:
                continue
            if self._forget_stream:
                with self._lock:
                    self._forget_stream = False
                self._translator.reset()  # the translator's temporal state must not blend across the gap
            result = self._process(image, timing)
            if result is None:
                continue
            out, out_timing = result
            out = self._crossfade(out)
            with self._lock:
                out_timing.composited = now = self._clock.now()
                serial = self._published.serial + 1 if self._published else 1
                self._published = _Published(out, out_timing, serial)
                self._history.append(self._published)
                self._stats.finished.append(now)
        self._notify()

    def _process(self, image: np.ndarray, timing: FrameTiming) -> tuple[np.ndarray, FrameTiming] | None:
        """Segment, translate and composite one frame; returns the output and the timing of its input."""
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
            return stage.composite(image, None, mask), timing
        translated = translator(image)
        end = clock.now()
        self._stats.translate_ms.append((end - timing.segmented) * 1000)
        # the translation of the input `latency_frames` calls ago: composite it with that input's mask
        if translator.latency_frames >= self._delay_line.capacity:
            self._delay_line.resize(translator.latency_frames + 1)
        self._delay_line.push(image, mask, timing.capture, timing)
        if translated is None:
            if self._published is None or self._style == "passthrough":
                timing.translated = end
                return image, timing  # nothing styled yet: show the camera rather than nothing
            return None
        entry = self._delay_line.get(translator.latency_frames)
        if entry is None or entry.timing is None:  # a translator that answers before it saw `latency_frames` inputs
            return None
        entry.timing.translated = end
        if translated.shape != entry.image.shape:
            translated = fit_cover(translated, self.width, self.height)
        if stage is not None and stage.mode != "off":
            return stage.composite(entry.image, translated, entry.mask), entry.timing
        return translated, entry.timing

    def _crossfade(self, image: np.ndarray) -> np.ndarray:
        if self._crossfade_from is None:
            return image
        self._crossfade_step += 1
        alpha = self._crossfade_step / CROSSFADE_FRAMES
        if alpha >= 1.0 or self._crossfade_from.shape != image.shape:
            self._crossfade_from = None
            return image
        blended = self._crossfade_from.astype(np.float32) * (1 - alpha) + image.astype(np.float32) * alpha
        return blended.astype(np.uint8)
