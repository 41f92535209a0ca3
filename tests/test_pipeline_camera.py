"""The tiny Live2Diff translator inside the camera loop: demo source -> runtime -> fake virtual camera.

The pipeline is made slower than real time (128x128 model, 20 fps output); the sink must still get
frames at its fps while the model warms up, runs, and switches prompt.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import torch
from vcam.model.tiny import build_tiny_pipeline

from tests.fakes.virtual_camera import fake_backend
from tests.waiting import wait_until
from vcam.runtime import Runtime
from vcam.sinks.virtual_camera import VirtualCameraSink
from vcam.sources.demo import DemoSource
from vcam.translators.live2diff import Live2DiffTranslator

FPS = 20.0
WIDTH, HEIGHT = 160, 120


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_tiny_translator_in_the_camera_loop_with_a_prompt_change() -> None:
    made: list[Live2DiffTranslator] = []
    recorded: list[torch.Tensor] = []

    def loader(name: str) -> Live2DiffTranslator:
        pipeline = build_tiny_pipeline(width=128, height=128, t_index_list=(30, 40), prompt="old prompt")
        original = pipeline.unet.stream

        def recording(sample: torch.Tensor, timesteps: torch.Tensor, embeds: torch.Tensor, *args: Any, **kw: Any):  # type: ignore[no-untyped-def]
            recorded.append(embeds[0].clone())
            return original(sample, timesteps, embeds, *args, **kw)

        pipeline.unet.stream = recording  # type: ignore[method-assign]
        translator = Live2DiffTranslator(pipeline, name=name)
        made.append(translator)
        return translator

    with fake_backend() as backend:
        source = DemoSource(WIDTH, HEIGHT, FPS)
        runtime = Runtime(
            source,
            [VirtualCameraSink(backend="fake")],
            width=WIDTH,
            height=HEIGHT,
            fps=FPS,
            style="tiny-random",
            translator_loader=loader,
        )
        runtime.start()
        try:
            assert wait_until(lambda: bool(made) and not made[0].warming_up and len(recorded) >= 4, timeout=60)
            translator = made[0]
            status = runtime.status()
            assert status.style == "tiny-random" and status.state == "running"
            encoder = translator.pipeline.prompt_encoder
            switch_started = time.monotonic()
            translator.set_prompt("new prompt")
            assert wait_until(lambda: translator.prompt == "new prompt", timeout=60)
            calls_at_switch = len(recorded)
            assert wait_until(lambda: len(recorded) >= calls_at_switch + 3, timeout=60)
            switch_ended = time.monotonic()
        finally:
            runtime.stop()
        camera = backend.last()
    # the pacing itself is checked on an injected clock (tests/test_runtime.py); here: frames kept flowing
    stamps = np.array(camera.timestamps)
    assert len(stamps[(stamps >= switch_started) & (stamps <= switch_ended)]) >= 1
    new_embeds = encoder("new prompt")[0]
    old_embeds = encoder("old prompt")[0]
    assert torch.equal(recorded[0], old_embeds)
    assert all(torch.equal(embeds, new_embeds) for embeds in recorded[calls_at_switch:])
    assert camera.last_rgb().shape == (HEIGHT, WIDTH, 3)
