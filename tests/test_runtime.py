"""The frame loop: steady output pacing whatever the translator does, reconnect slates, control, shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from tests.fakes.clock import ManualClock
from tests.fakes.virtual_camera import fake_backend
from tests.waiting import wait_for, wait_until
from vcam.clock import SYSTEM_CLOCK, Clock
from vcam.errors import SourceUnavailable
from vcam.frame import Frame
from vcam.imaging import slate
from vcam.runtime import Runtime
from vcam.sinks.base import Sink
from vcam.sinks.null import NullSink
from vcam.sinks.virtual_camera import VirtualCameraSink
from vcam.sources.base import Source
from vcam.sources.demo import DemoSource
from vcam.style_switch import CROSSFADE_S
from vcam.translators.base import Translator
from vcam.translators.classic import ClassicTranslator

W, H, FPS = 160, 96, 30.0


class StuckTranslator(Translator):
    """Translates the first frame, then blocks on `release` in every call: a model far slower than the camera."""

    name = "stuck"

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls > 1:
            self.release.wait(30)
        return 255 - image


class RecordingSink(Sink):
    """Keeps every frame sent (small sizes only) with its time."""

    description = "recording"

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.frames: list[np.ndarray] = []
        self.times: list[float] = []
        self.opened: tuple[int, int, float] | None = None
        self.closed = 0

    def open(self, width: int, height: int, fps: float) -> None:
        self.opened = (width, height, fps)

    def send(self, image: np.ndarray) -> None:
        self.frames.append(image.copy())
        self.times.append(self.clock.now())

    def close(self) -> None:
        self.closed += 1


class FlakySource(Source):
    """A camera that goes away after `fail_after` frames and comes back after `down_for` seconds."""

    description = "flaky camera"

    def __init__(self, fail_after: int, down_for: float) -> None:
        self.fail_after, self.down_for = fail_after, down_for
        self.index = 0
        self.lost_at: float | None = None
        self.opens = 0

    def open(self) -> None:
        if self.lost_at is not None and time.monotonic() - self.lost_at < self.down_for:
            raise SourceUnavailable("camera unplugged")
        self.opens += 1

    def read(self) -> Frame:
        time.sleep(1 / FPS)
        self.index += 1
        if self.index == self.fail_after:
            self.lost_at = time.monotonic()
            raise SourceUnavailable("camera unplugged")
        image = np.full((H, W, 3), 100, np.uint8)
        return Frame(image, time.monotonic(), self.index)

    def close(self) -> None:
        return None

    @property
    def size(self) -> tuple[int, int]:
        return W, H

    @property
    def fps(self) -> float:
        return FPS


@pytest.fixture
def no_thread_leak() -> Iterator[None]:
    before = {thread.ident for thread in threading.enumerate()}
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        extra = [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("vcam-")]
        if not extra:
            return
        time.sleep(0.05)
    raise AssertionError(f"threads left running: {[t.name for t in extra]}")


def test_output_keeps_its_pace_while_the_translator_is_stuck(no_thread_leak: None) -> None:
    """The output thread waits only on its clock: each frame interval sends exactly one frame, repeating the
    newest finished one while the work thread is stuck inside the model."""
    clock = ManualClock()
    translator = StuckTranslator()
    with fake_backend() as backend:
        sink = RecordingSink(clock)
        runtime = Runtime(
            DemoSource(W, H, FPS),
            [sink, VirtualCameraSink(backend="fake")],
            width=W,
            height=H,
            fps=FPS,
            style="stuck",
            translator_loader=lambda name: translator,
            clock=clock,
        )
        runtime.start()
        try:
            wait_for(lambda: translator.calls >= 2, what="the first frame translated, the second stuck")
            wait_for(lambda: runtime.status().style == "stuck", what="the style switch")
            for tick in range(1, round(CROSSFADE_S * FPS) + 2):  # the crossfade to the stuck look's frame, by time
                before = len(sink.frames)
                clock.advance(1 / FPS)
                wait_for(lambda before=before: len(sink.frames) == before + 1, what=f"crossfade frame {tick}")
            first = len(sink.frames)
            for tick in range(1, 31):
                clock.advance(1 / FPS)
                wait_for(lambda tick=tick: len(sink.frames) == first + tick, what=f"frame {tick} of the stuck run")
            assert len(sink.frames) == first + 30  # not one more: a frame per interval, never a burst
            sent = backend.last().frames_received
            status = runtime.status()
        finally:
            translator.release.set()
            runtime.stop()
    gaps = np.diff(sink.times[first - 1 :])
    assert gaps == pytest.approx([1 / FPS] * 30, abs=1e-9)
    assert all(np.array_equal(frame, sink.frames[first]) for frame in sink.frames[first:])  # the newest, repeated
    assert sent == len(sink.frames)  # the virtual camera got every frame the recording sink got
    assert status.style == "stuck"
    assert status.repeated >= 29  # of the 30 identical frames, at most the first was new


def test_exact_frame_count_and_sink_lifecycle(no_thread_leak: None) -> None:
    sink = RecordingSink()
    runtime = Runtime(DemoSource(W, H, FPS, realtime=False), [sink, NullSink()], width=W, height=H, fps=60.0)
    runtime.start(max_frames=25)
    assert runtime.wait(frames=25, timeout=10)
    runtime.stop()
    runtime.stop()  # idempotent
    assert len(sink.frames) == 25
    assert sink.opened == (W, H, 60.0)
    assert sink.closed == 1
    assert all(frame.shape == (H, W, 3) and frame.dtype == np.uint8 for frame in sink.frames)


def test_a_frame_sent_while_a_stop_arrives_is_counted(no_thread_leak: None) -> None:
    """SIGHUP/SIGTERM land at any moment: a frame the sinks got is in `frames_out` (the summary's "sent N")."""

    class StoppingSink(RecordingSink):
        runtime: Runtime | None = None

        def send(self, image: np.ndarray) -> None:
            super().send(image)
            if len(self.frames) == 5 and self.runtime is not None:
                stopper = threading.Thread(target=self.runtime.stop)
                stopper.start()
                wait_for(self.runtime._stop.is_set, timeout=10, what="the stop to be requested")  # mid-send

    sink = StoppingSink()
    runtime = Runtime(DemoSource(W, H, FPS, realtime=False), [sink], width=W, height=H, fps=60.0)
    sink.runtime = runtime
    runtime.start()
    wait_for(lambda: sink.closed == 1, timeout=30, what="the runtime to stop")
    assert len(sink.frames) == 5
    assert runtime.status().frames_out == 5


def test_frames_are_resized_to_the_output_size() -> None:
    sink = RecordingSink()
    runtime = Runtime(DemoSource(320, 240, FPS, realtime=False), [sink], width=W, height=H, fps=60.0)
    runtime.start(max_frames=5)
    runtime.wait(frames=5, timeout=10)
    runtime.stop()
    assert {frame.shape for frame in sink.frames} == {(H, W, 3)}


def test_lost_camera_shows_the_slate_then_frames_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    import vcam.sources.reconnect as reconnect

    monkeypatch.setattr(reconnect, "RECONNECT_INITIAL_DELAY", 0.1)
    monkeypatch.setattr(reconnect.Backoff.__init__, "__defaults__", (0.1, 2.0, 0.4))
    source = FlakySource(fail_after=10, down_for=0.6)
    sink = RecordingSink()
    runtime = Runtime(source, [sink], width=W, height=H, fps=FPS)
    runtime.start()
    seen_states: set[str] = set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (source.opens >= 2 and len(sink.frames) > 80):
        seen_states.add(runtime.status().state)
        time.sleep(0.02)
    runtime.stop()
    card = slate(W, H, "Camera unavailable", "reconnecting...")
    is_slate = [np.array_equal(frame, card) for frame in sink.frames]
    assert "reconnecting" in seen_states
    assert any(is_slate), "the slate was never sent"
    first_slate = is_slate.index(True)
    last_slate = len(is_slate) - 1 - is_slate[::-1].index(True)
    assert first_slate > 0, "the slate was sent before the camera was lost"
    assert all(is_slate[first_slate : last_slate + 1]), "the camera was lost once: its slate is one unbroken run"
    camera = [bool(np.all(frame == 100)) for frame in sink.frames]  # FlakySource's frames are all 100
    assert any(camera[:first_slate]), "no camera frame was sent before the camera was lost"
    assert any(camera[last_slate + 1 :]), "frames did not resume after reconnecting"
    assert source.opens >= 2


def test_pause_sends_the_privacy_frame_and_resume_restores(no_thread_leak: None) -> None:
    sink = RecordingSink()
    runtime = Runtime(DemoSource(W, H, FPS), [sink], width=W, height=H, fps=FPS)
    card = slate(W, H, "Camera paused", "privacy mode: your camera is not shown")
    runtime.start()
    wait_for(lambda: runtime.status().state == "running", what="the camera running")
    runtime.pause()
    assert runtime.status().state == "paused"
    wait_for(lambda: np.array_equal(sink.frames[-1], card), what="the privacy card")
    paused_count = len(sink.frames)
    runtime.resume()
    wait_for(lambda: len(sink.frames) > paused_count + 2, what="frames after resume")
    runtime.stop()
    assert not np.array_equal(sink.frames[-1], card)


def test_style_switch_is_seamless_and_a_failed_style_keeps_the_old_one(no_thread_leak: None) -> None:
    loaded = threading.Event()

    def loader(name: str) -> Translator:
        if name == "broken":
            raise RuntimeError("weights are corrupt")
        loaded.wait(10)  # a slow load: the test decides when it ends
        return ClassicTranslator(name)

    sink = RecordingSink()
    runtime = Runtime(DemoSource(W, H, FPS), [sink], width=W, height=H, fps=FPS, translator_loader=loader)
    events: list[str] = []
    runtime.add_status_listener(lambda status: events.append(status.state))
    runtime.start()
    wait_for(lambda: runtime.status().state == "running", what="the camera running")
    runtime.set_style("posterize")
    assert runtime.status().state == "loading_style"
    sent_before = len(sink.frames)
    wait_for(lambda: len(sink.frames) > sent_before + 3, what="frames sent while the style loads")
    assert runtime.status().style == "passthrough"  # the old style keeps streaming meanwhile
    loaded.set()
    wait_for(lambda: runtime.status().style == "posterize", what="the switch to posterize")
    runtime.set_style("broken")
    wait_for(lambda: runtime.status().last_error is not None, what="the failed load")
    status = runtime.status()
    runtime.stop()
    assert status.style == "posterize"
    assert status.last_error is not None and "broken" in status.last_error and "corrupt" in status.last_error
    assert "loading_style" in events


def test_configured_style_that_cannot_load_falls_back_to_a_classic_look() -> None:
    from vcam.errors import UserError

    def loader(name: str) -> Translator:
        if name == "missing-weights":
            raise UserError("style 'missing-weights' is not downloaded: run `vcam models download missing-weights`")
        return ClassicTranslator(name)

    runtime = Runtime(
        DemoSource(W, H, FPS),
        [NullSink()],
        width=W,
        height=H,
        fps=FPS,
        style="missing-weights",
        translator_loader=loader,
    )
    runtime.start()
    wait_until(lambda: runtime.status().style == "cartoon")
    status = runtime.status()
    runtime.stop()
    assert status.style == "cartoon"
    assert status.last_error is not None and "vcam models download missing-weights" in status.last_error


class DelayedTranslator(Translator):
    """Returns the input of `delay` calls ago (None until it has one): a stand-in for a pipelined model."""

    name = "delayed"

    def __init__(self, delay: int) -> None:
        self.delay = delay
        self.history: list[np.ndarray] = []

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        self.history.append(image)
        if len(self.history) <= self.delay:
            return None
        return self.history[-1 - self.delay]

    @property
    def latency_frames(self) -> int:
        return self.delay


def test_latency_is_measured_from_the_capture_of_the_translated_input() -> None:
    sink = RecordingSink()
    runtime = Runtime(
        DemoSource(W, H, FPS),
        [sink],
        width=W,
        height=H,
        fps=FPS,
        style="delayed",
        translator_loader=lambda name: DelayedTranslator(3),
    )
    runtime.start()
    wait_for(lambda: runtime.status().style == "delayed", what="the delayed style")
    before = len(runtime._stats.latency_ms)  # frames of the passthrough style, shown while "delayed" loaded
    wait_for(lambda: len(runtime._stats.latency_ms) >= 2 * before + 10, what="a majority of delayed frames")
    status = runtime.status()
    runtime.stop()
    # the demo source paces at 30 fps, so three frames of delay is at least 100 ms of capture-to-send latency
    # (a loaded machine only adds to it)
    assert status.latency_ms_p50 >= 90, status


def test_status_snapshot_fields() -> None:
    runtime = Runtime(DemoSource(W, H, FPS), [NullSink()], width=W, height=H, fps=FPS)
    runtime.start()
    wait_for(lambda: runtime.status().state == "running" and runtime.status().frames_out >= 5, what="five frames")
    status = runtime.status()
    runtime.stop()
    data = status.to_dict()
    for key in (
        "state",
        "fps_in",
        "fps_out",
        "latency_ms_p50",
        "latency_ms_p95",
        "dropped",
        "repeated",
        "style",
        "last_error",
    ):
        assert key in data
    assert data["state"] == "running"
    assert data["fps_out"] > 0 and data["frames_out"] >= 5
    assert runtime.status().state == "stopped"


def test_a_failed_runtime_thread_reports_state_error() -> None:
    class BrokenSink(RecordingSink):
        def send(self, image: np.ndarray) -> None:
            raise RuntimeError("sink exploded")

    runtime = Runtime(DemoSource(W, H, FPS), [BrokenSink()], width=W, height=H, fps=FPS)
    runtime.start()
    wait_until(lambda: not runtime.running)
    status = runtime.status()
    runtime.stop()
    assert status.state == "error"
    assert status.last_error is not None and "sink exploded" in status.last_error


class WarmedTranslator(Translator):
    """A model stand-in: records the frames of its warmup and holds `memory_mb` of "model"."""

    name = "warmed"

    def __init__(self, memory_mb: float) -> None:
        self.memory_mb = memory_mb
        self.warmup_frames: list[np.ndarray] = []

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image

    def warmup(self, images: list[np.ndarray]) -> None:
        self.warmup_frames = list(images)

    def resident_memory_mb(self) -> float:
        return self.memory_mb


class ServingSink(RecordingSink):
    """A sink that serves its frames at an address, like the preview."""

    @property
    def url(self) -> str | None:
        return "http://127.0.0.1:9/"


def test_a_new_style_is_warmed_on_recent_frames_and_reports_its_memory(no_thread_leak: None) -> None:
    loaded: list[WarmedTranslator] = []

    def load(name: str) -> Translator:
        loaded.append(WarmedTranslator(memory_mb=12.5))
        return loaded[-1]

    runtime = Runtime(DemoSource(W, H, FPS), [RecordingSink()], width=W, height=H, fps=FPS, translator_loader=load)
    runtime.start()
    wait_until(lambda: runtime.status().frames_out >= 10)
    assert runtime.status().model_memory_mb == 0.0  # passthrough holds no model
    runtime.set_style("warmed")
    wait_until(lambda: runtime.status().style == "warmed")
    status = runtime.status()
    runtime.stop()
    [translator] = loaded
    assert 0 < len(translator.warmup_frames) <= 8  # the most recent camera frames (RECENT_FRAMES)
    assert all(frame.shape == (H, W, 3) for frame in translator.warmup_frames)  # at the output size
    assert status.model_memory_mb == 12.5


def test_the_status_names_the_url_a_sink_serves() -> None:
    assert RecordingSink().url is None  # the contract's default
    with Runtime(DemoSource(W, H, FPS), [RecordingSink()], width=W, height=H, fps=FPS) as plain:
        plain.start(max_frames=1)
        assert plain.status().preview_url is None
    with Runtime(DemoSource(W, H, FPS), [RecordingSink(), ServingSink()], width=W, height=H, fps=FPS) as served:
        served.start(max_frames=1)
        assert served.status().preview_url == "http://127.0.0.1:9/"
