"""Style loads never freeze the output (issue 12 section 5): the mechanisms, checked deterministically.

- a load imports nothing (the model stack is imported before the output starts) and holds nothing the output
  thread waits on; it runs with the collector paused;
- the crossfade after a switch follows the output's clock, not the model's speed;
- the configured style warms on real camera frames while the plain camera image flows from the first tick;
- after a pause/resume, nothing captured or in flight before the break is shown.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from vcam.model.priority import BACKGROUND_NICE

from tests.fakes.clock import ManualClock
from tests.test_runtime import DelayedTranslator, RecordingSink
from tests.waiting import wait_for
from vcam.clock import SYSTEM_CLOCK
from vcam.frame import Frame
from vcam.imaging import slate
from vcam.runtime import Runtime
from vcam.sources.base import Source
from vcam.sources.demo import DemoSource
from vcam.style_switch import CROSSFADE_S, RECENT_FRAMES, Crossfade
from vcam.translators.base import Translator

W, H, FPS = 64, 48, 30.0
REPO = Path(__file__).resolve().parent.parent


def _is_slate(image: np.ndarray) -> bool:
    cards = [
        slate(W, H, "Starting camera", "live2diff-vcam"),
        slate(W, H, "Camera paused", "privacy mode: your camera is not shown"),
        slate(W, H, "Camera unavailable", "reconnecting..."),
    ]
    return any(np.array_equal(image, card) for card in cards)


def _demo_runtime(
    translator: Translator, sink: RecordingSink, style: str = "passthrough", clock: ManualClock | None = None
) -> Runtime:
    """The demo source into `sink` at W x H, FPS (on `clock`, else the system's); every style loads `translator`."""
    return Runtime(
        DemoSource(W, H, FPS),
        [sink],
        width=W,
        height=H,
        fps=FPS,
        style=style,
        translator_loader=lambda name: translator,
        clock=clock if clock is not None else SYSTEM_CLOCK,
    )


# ---------------------------------------------------------------------------------------------- 1. loads never hold
def _new_modules_after_preload(script: str, tmp_path: Path) -> list[str]:
    """Run `script` in a fresh interpreter after `preload_model_stack()`; the modules it imported."""
    code = (
        "import json, sys\n"
        "from vcam.style_switch import preload_model_stack\n"
        "preload_model_stack()\n"
        "before = set(sys.modules)\n" + script + "\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_model_load_imports_nothing_after_the_preload(tmp_path: Path) -> None:
    """Imports hold the GIL for hundreds of ms (dlopen, torch._C, operator tables): after the runtime's preload,
    loading the tiny model and a style from files (the real loader: store, pool, LoRA fusing) imports nothing."""
    script = (
        "from tests.tiny_weights import write_tiny_model_set\n"
        "from pathlib import Path\n"
        f"model_set = write_tiny_model_set(Path({str(tmp_path / 'models')!r}))\n"
        "import vcam.store.catalogue\n"
        "vcam.store.catalogue.load_packaged_data = lambda: model_set.catalogue\n"
        "from vcam.config import config_from_dict\n"
        "from vcam.styles import load_translator\n"
        "config = config_from_dict({'models': {'cache_dir': str(model_set.cache), 'device': 'cpu', "
        "'dtype': 'float32'}})\n"
        "before = set(sys.modules)\n"
        "import numpy as np\n"
        "for name in ('tiny-random', 'tiny-a', 'tiny-lora'):\n"
        "    translator = load_translator(name, config)\n"
        "    translator.warmup([np.full((48, 64, 3), 9 * i, np.uint8) for i in range(8)])\n"
        "    translator(np.zeros((48, 64, 3), np.uint8))\n"
        "    translator.close()\n"
    )
    new = _new_modules_after_preload(script, tmp_path)
    # the test's own helpers (written before the measured part) excepted, nothing was imported by the loads
    assert [name for name in new if not name.startswith("tests")] == [], new


class _BlockingLoader:
    """A loader that stops inside the load (or inside the warmup) until released, recording the collector."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.inside = threading.Event()
        self.release = threading.Event()
        self.collector_enabled_inside: bool | None = None

    def _block(self) -> None:
        self.collector_enabled_inside = gc.isenabled()
        self.inside.set()
        self.release.wait(30)

    def __call__(self, name: str) -> Translator:
        if self.where == "load":
            self._block()
        loader = self

        class Warming(Translator):
            def __call__(self, image: np.ndarray) -> np.ndarray:
                return 255 - image

            def warmup(self, images: list[np.ndarray]) -> None:
                if loader.where == "warmup":
                    loader._block()

        return Warming()


@pytest.mark.parametrize("where", ["load", "warmup"])
def test_the_output_thread_waits_on_nothing_a_load_holds(where: str) -> None:
    """While a load is stopped inside the loader or the warmup, every clock tick sends exactly one frame and the
    status answers: the output thread takes no lock the loading thread holds. The load runs without the collector."""
    clock = ManualClock()
    loader = _BlockingLoader(where)
    sink = RecordingSink(clock)
    runtime = Runtime(DemoSource(W, H, FPS), [sink], width=W, height=H, fps=FPS, translator_loader=loader, clock=clock)
    runtime.start()
    try:
        wait_for(lambda: len(sink.frames) == 1, what="the first frame")
        runtime.set_style("blocked")
        wait_for(loader.inside.is_set, what=f"the load stopped inside the {where}")
        for tick in range(1, 31):
            clock.advance(1 / FPS)
            wait_for(lambda tick=tick: len(sink.frames) == 1 + tick, what=f"frame {tick} during the load")
            assert runtime.status().styles_loading == ("blocked",)
    finally:
        loader.release.set()
        runtime.stop()
    assert loader.collector_enabled_inside is False
    assert gc.isenabled()


def _nice(thread_id: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, thread_id)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_a_load_and_the_threads_it_starts_run_below_the_runtimes_threads() -> None:
    """A load (and its warmup) runs `BACKGROUND_NICE` levels lower, with the threads it starts (torch's OpenMP workers
    inherit it that way); the runtime's threads keep the process's priority."""
    base = _nice(threading.get_native_id())
    seen: dict[str, int] = {}

    class Niced(Translator):
        name = "niced"

        def __call__(self, image: np.ndarray) -> np.ndarray:
            seen.setdefault("work", _nice(threading.get_native_id()))
            return image

        def warmup(self, images: list[np.ndarray]) -> None:
            seen["warmup"] = _nice(threading.get_native_id())
            started = threading.Thread(target=lambda: seen.setdefault("started", _nice(threading.get_native_id())))
            started.start()
            started.join()

    def load(name: str) -> Translator:
        seen["load"] = _nice(threading.get_native_id())
        return Niced()

    runtime = Runtime(DemoSource(W, H, FPS), [RecordingSink()], width=W, height=H, fps=FPS, translator_loader=load)
    runtime.start()
    try:
        runtime.set_style("niced")
        wait_for(lambda: "work" in seen, what="the loaded style running")
        output = next(thread for thread in threading.enumerate() if thread.name == "vcam-output")
        assert output.native_id is not None
        seen["output"] = _nice(output.native_id)
    finally:
        runtime.stop()
    lowered = min(19, base + BACKGROUND_NICE)
    assert seen == {"load": lowered, "warmup": lowered, "started": lowered, "work": base, "output": base}
    assert _nice(threading.get_native_id()) == base


class _SlowToCount(Translator):
    """A model whose memory figure is slow to answer for one caller (the pool counting a load at real size)."""

    name = "slow-to-count"

    def __init__(self) -> None:
        self.counting = threading.Event()
        self.release = threading.Event()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return 255 - image

    def resident_memory_mb(self) -> float:
        if threading.current_thread().name == "status-caller":
            self.counting.set()
            self.release.wait(30)
        return 1.0


def test_a_status_query_holds_nothing_the_output_thread_takes() -> None:
    """While a status query waits for a model's memory figure (answered under the model pool's lock, which a load
    holds), every clock tick still sends exactly one frame: the query asks other components outside the runtime's
    lock, which the output thread takes every tick."""
    clock = ManualClock()
    translator = _SlowToCount()
    sink = RecordingSink(clock)
    runtime = _demo_runtime(translator, sink, "slow-to-count", clock)
    runtime.start()
    asker = threading.Thread(target=runtime.status, name="status-caller", daemon=True)
    try:
        wait_for(lambda: runtime.status().style == "slow-to-count", what="the style shown")
        first = len(sink.frames)
        asker.start()
        wait_for(translator.counting.is_set, what="the status query inside the memory figure")
        for tick in range(1, 31):
            clock.advance(1 / FPS)
            wait_for(lambda tick=tick: len(sink.frames) == first + tick, what=f"frame {tick} during the query")
    finally:
        translator.release.set()
        runtime.stop()
    asker.join(30)
    assert not asker.is_alive()


def test_the_runtime_preloads_before_its_first_frame() -> None:
    sink = RecordingSink()
    seen: list[tuple[int, list[str]]] = []

    def preload() -> None:
        seen.append((len(sink.frames), [t.name for t in threading.enumerate() if t.name.startswith("vcam-")]))

    runtime = Runtime(DemoSource(W, H, FPS), [sink], width=W, height=H, fps=FPS, preload=preload)
    runtime.start(max_frames=3)
    runtime.wait(frames=3, timeout=30)
    runtime.stop()
    assert seen == [(0, [])]  # once, before any frame and before the frame loop's threads exist


# ---------------------------------------------------------------------------------------------- 2. fade by time
def test_the_crossfade_weight_follows_the_clock() -> None:
    fade = Crossfade()
    old = np.full((2, 2, 3), 200, np.uint8)
    new = np.full((2, 2, 3), 100, np.uint8)
    fade.start(old, 50.0)
    for step in range(10):
        now = 50.0 + step * 0.05
        expected = min(1.0, step * 0.05 / CROSSFADE_S)
        assert fade.weight(now) == pytest.approx(expected, abs=1e-12)
        blended = fade.apply(new, now).astype(np.int16)
        assert np.all(np.abs(blended - (200 * (1 - expected) + 100 * expected)) <= 0.5 + 1e-6)  # rounded
    assert fade.weight(60.0) == 1.0  # finished: the new look alone


def test_the_crossfade_allocates_only_its_output_image() -> None:
    """The output thread blends every tick of a fade: no float temporaries (at 1280x720 their page faults took a
    loaded 2-core machine's output thread 130 ms per frame), only the blended uint8 image."""
    rng = np.random.default_rng(0)
    old = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    new = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    fade = Crossfade()
    fade.start(old, 0.0)
    tracemalloc.start()
    try:
        blended = fade.apply(new, CROSSFADE_S / 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * new.nbytes, f"the blend allocated {peak} bytes for a {new.nbytes}-byte image"
    expected = old.astype(np.float64) * (2 / 3) + new.astype(np.float64) / 3
    assert np.abs(blended - expected).max() <= 0.5 + 1e-4  # the blend, rounded to the nearest level


class SlowBlack(Translator):
    """A slow model's stand-in: black frames, with a work thread that is never the fade's clock."""

    name = "black"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.zeros_like(image)


def test_a_switch_fades_in_over_the_output_clock_whatever_the_model_speed() -> None:
    """The camera keeps coming in real time while the output's clock stands still: the fade moves only with it."""
    clock = ManualClock()
    sink = RecordingSink(clock)
    translator = SlowBlack()
    runtime = _demo_runtime(translator, sink, clock=clock)
    runtime.start()
    try:
        wait_for(lambda: len(sink.frames) == 1, what="the first frame")
        runtime.set_style("black")
        wait_for(lambda: translator.calls >= 20, what="the new look's frames, while the output clock stands still")
        first = len(sink.frames)
        ticks = round(CROSSFADE_S * FPS) + 3
        for tick in range(1, ticks + 1):
            clock.advance(1 / FPS)
            wait_for(lambda tick=tick: len(sink.frames) == first + tick, what=f"frame {tick}")
    finally:
        runtime.stop()
    faded = sink.frames[first:]
    still = faded[0].astype(np.float64)  # weight 0: the last camera frame
    assert not np.all(still == 0)
    for index, frame in enumerate(faded):
        weight = min(1.0, index / FPS / CROSSFADE_S)
        assert np.abs(frame - still * (1 - weight)).max() <= 0.5 + 1e-4, f"frame {index}"  # rounded
    assert np.all(faded[-1] == 0)


# ---------------------------------------------------------------------------------------------- 3. start-up warmup
class CountingWarmup(Translator):
    """Records its warmup frames and, like a diffusion model, answers None for its first `latency` calls."""

    name = "counting"

    def __init__(self, latency: int = 4) -> None:
        self.warmup_frames: list[np.ndarray] = []
        self.latency = latency
        self.calls = 0
        self.serials: list[int] = []  # the runtime's published serial at each call
        self.runtime: Runtime | None = None

    def warmup(self, images: list[np.ndarray]) -> None:
        self.warmup_frames = list(images)

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        self.calls += 1
        if self.runtime is not None and self.runtime._published is not None:
            self.serials.append(self.runtime._published.serial)
        return None if self.calls <= self.latency else 255 - image


def test_the_configured_style_warms_on_real_frames_while_the_camera_flows() -> None:
    translator = CountingWarmup()
    sink = RecordingSink()
    runtime = _demo_runtime(translator, sink, "counting")
    translator.runtime = runtime
    runtime.start()
    try:
        wait_for(lambda: translator.calls > translator.latency + 3, what="the style running")
    finally:
        runtime.stop()
    assert sink.frames and not any(_is_slate(frame) for frame in sink.frames)  # camera frames from the first tick
    assert len(translator.warmup_frames) == RECENT_FRAMES  # real frames, not a snapshot from before the camera
    assert all(frame.shape == (H, W, 3) and frame.any() for frame in translator.warmup_frames)
    # while the new style answered None, the plain camera image kept being published: no frozen picture
    during = translator.serials[: translator.latency + 1]
    assert all(later > earlier for earlier, later in zip(during, during[1:], strict=False)), during


# ---------------------------------------------------------------------------------------------- 4. breaks
class NumberedSource(Source):
    """Frames whose pixels carry their capture number (red = n % 256, green = n // 256), at FPS in real time."""

    description = "numbered"

    def __init__(self) -> None:
        self.count = 0

    def open(self) -> None:
        return None

    def read(self) -> Frame:
        time.sleep(1 / FPS)
        self.count += 1
        image = np.zeros((H, W, 3), np.uint8)
        image[..., 0], image[..., 1] = self.count % 256, self.count // 256
        return Frame(image, time.monotonic(), self.count)

    def close(self) -> None:
        return None

    @property
    def size(self) -> tuple[int, int]:
        return W, H

    @property
    def fps(self) -> float:
        return FPS


def _number(frame: np.ndarray) -> int:
    return int(frame[0, 0, 0]) + 256 * int(frame[0, 0, 1])


def test_nothing_from_before_a_pause_is_shown_after_the_resume() -> None:
    """A translator T-1 = 3 frames late whose reset forgets nothing: its in-flight outputs of pre-pause frames,
    the last pre-pause picture and frames captured while paused never reach the output after the resume."""
    translator = DelayedTranslator(3)
    source = NumberedSource()
    sink = RecordingSink()
    runtime = Runtime(
        source, [sink], width=W, height=H, fps=FPS, style="delayed", translator_loader=lambda name: translator
    )
    runtime.start()
    try:
        wait_for(lambda: runtime.status().style == "delayed" and len(translator.history) > 10, what="the style")
        runtime.pause()
        wait_for(lambda: _is_slate(sink.frames[-1]), what="the privacy card")
        paused_at = source.count
        wait_for(lambda: source.count > paused_at + 5, what="frames captured while paused")
        runtime.resume()
        resumed_at = source.count
        sent_at_resume = len(sink.frames)
        wait_for(lambda: sum(not _is_slate(f) for f in sink.frames[sent_at_resume:]) >= 10, what="frames after")
    finally:
        runtime.stop()
    after = [_number(frame) for frame in sink.frames[sent_at_resume:] if not _is_slate(frame)]
    assert min(after) > resumed_at, (resumed_at, after[:10])
