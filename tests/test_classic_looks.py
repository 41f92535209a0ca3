"""The classic looks: no channel wraps around anywhere in 0..255, and a stream's looks are temporally stable."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from tests.waiting import wait_for
from vcam.runtime import Runtime
from vcam.sinks.null import NullSink
from vcam.sources.demo import DemoSource, render_demo_frame
from vcam.translators.base import Translator
from vcam.translators.classic import FILTERS, ClassicTranslator, cartoon

LOOKS = sorted(FILTERS)
#: how much darker (luma, 0..255) a brighter input's output may come out: rounding, never a wrap-around
LUMA_SLACK = 8.0


def luma(image: np.ndarray) -> float:
    return float(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32).mean())


def uniform(colour: tuple[int, int, int], size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), colour, dtype=np.uint8)


def channel_ramps() -> list[list[tuple[int, int, int]]]:
    """For each channel and each setting of the other two in {0, 128, 255}: that channel from 0 to 255."""
    ramps = []
    for channel in range(3):
        for first in (0, 128, 255):
            for second in (0, 128, 255):
                ramp = []
                for value in range(256):
                    colour = [first, second]
                    colour.insert(channel, value)
                    ramp.append((colour[0], colour[1], colour[2]))
                ramps.append(ramp)
    return ramps


def test_cartoon_keeps_white_white() -> None:
    """The issue's case: a 250-grey image came out [4 4 4] (uint8 wrap-around)."""
    out = cartoon(np.full((64, 64, 3), 250, np.uint8))
    assert out.dtype == np.uint8
    assert out.min() >= 240


@pytest.mark.parametrize("name", LOOKS)
def test_no_look_wraps_around_over_every_channels_full_range(name: str) -> None:
    look = FILTERS[name]
    for ramp in channel_ramps():
        lumas = [luma(look(uniform(colour), None)) for colour in ramp]
        drops = [(ramp[i + 1], lumas[i], lumas[i + 1]) for i in range(255) if lumas[i + 1] < lumas[i] - LUMA_SLACK]
        assert not drops, f"{name}: a brighter input came out darker (colour, luma before, luma after): {drops[:3]}"
        assert lumas[-1] >= lumas[0] - LUMA_SLACK


@pytest.mark.parametrize("name", LOOKS)
def test_a_stream_ramping_up_never_wraps_either(name: str) -> None:
    """The same ramps through a translator with temporal state, one value per frame."""
    for ramp in channel_ramps()[::4]:
        translator = ClassicTranslator(name)
        lumas = [luma(translator(uniform(colour))) for colour in ramp]
        worst = min(lumas[i + 1] - lumas[i] for i in range(255))
        assert worst >= -LUMA_SLACK, f"{name}: luma dropped by {-worst:.1f} between frames on {ramp[-1]}"


@pytest.mark.parametrize("name", LOOKS)
def test_bright_areas_of_the_demo_scene_stay_bright(name: str) -> None:
    frame = render_demo_frame(5, 320, 180, seed=0)
    bright_frame = np.clip(frame.astype(np.float32) * 1.5, 0, 255).astype(np.uint8)  # highlights up to 255
    # flat bright areas: luma >= 235 over a 7x7 neighbourhood
    bright = cv2.erode((cv2.cvtColor(bright_frame, cv2.COLOR_RGB2GRAY) >= 235).astype(np.uint8), np.ones((7, 7)))
    assert bright.sum() > 500, "the test scene needs bright areas"
    for out in (FILTERS[name](bright_frame, None), ClassicTranslator(name)(bright_frame)):
        out_luma = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
        darkest_bright = np.percentile(out_luma[bright.astype(bool)], 1)
        assert darkest_bright >= min(np.median(out_luma), 150), (
            f"{name}: bright input came out dark ({darkest_bright})"
        )


def test_temporal_state_makes_every_look_steadier_on_a_photograph_clip() -> None:
    pytest.importorskip("skimage", reason="scikit-image (dev extra) provides the sample photograph")
    from vcam.bench.classic import photo_clip, warp_errors

    clip = photo_clip(frames=12, noise=3.0, seed=0, size=256)
    for name in LOOKS:
        errors = warp_errors(name, clip)
        ratio = errors["warp_error_stable"] / errors["warp_error_stateless"]
        assert ratio < 0.85, f"{name}: warp error with temporal state is {ratio:.2f}x the stateless one: {errors}"


@pytest.mark.parametrize("name", LOOKS)
def test_reset_forgets_the_stream(name: str) -> None:
    frames = [render_demo_frame(index, 160, 96) for index in range(4)]
    translator = ClassicTranslator(name)
    for frame in frames[:3]:
        translator(frame)
    assert translator.state.stable is not None
    translator.reset()
    after_reset = translator(frames[3])
    np.testing.assert_array_equal(after_reset, ClassicTranslator(name)(frames[3]))
    np.testing.assert_array_equal(after_reset, FILTERS[name](frames[3], None))


class CountingTranslator(Translator):
    """Counts its calls and resets (the runtime's work thread is the only caller)."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0
        self.resets = 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.calls += 1
        return image

    def reset(self) -> None:
        self.resets += 1


def test_the_runtime_resets_the_translator_on_pause_and_resume() -> None:
    translator = CountingTranslator()
    runtime = Runtime(
        DemoSource(160, 96, 30.0),
        [NullSink()],
        width=160,
        height=96,
        style="counting",
        translator_loader=lambda name: translator,
    )
    with runtime:
        runtime.start()
        wait_for(lambda: runtime.status().style == "counting" and translator.calls > 2, what="the style to run")
        assert translator.resets == 0
        runtime.pause()
        time.sleep(0.1)
        runtime.resume()
        calls = translator.calls
        wait_for(lambda: translator.calls > calls + 2, what="frames after resume")
        assert translator.resets >= 1


def test_the_runtime_resets_the_translator_when_the_camera_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import vcam.sources.reconnect as reconnect
    from tests.test_runtime import FlakySource

    monkeypatch.setattr(reconnect.Backoff.__init__, "__defaults__", (0.1, 2.0, 0.4))
    translator = CountingTranslator()
    source = FlakySource(fail_after=10, down_for=0.3)
    runtime = Runtime(
        source, [NullSink()], width=160, height=96, style="counting", translator_loader=lambda n: translator
    )
    with runtime:
        runtime.start()
        wait_for(lambda: source.opens >= 2, what="the camera to come back")
        calls = translator.calls
        wait_for(lambda: translator.calls > calls + 2, what="frames after the reconnect")
        assert translator.resets >= 1
