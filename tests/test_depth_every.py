"""`depth_every = N`: depth is estimated on every N-th input frame and reused in between."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from vcam.model.tiny import build_tiny_pipeline

from tests.pipeline_helpers import moving_frames
from vcam.errors import ConfigError


def _count_depth_calls(pipeline: Any) -> list[int]:
    calls: list[int] = []
    model = pipeline.depth_encoder.model
    original = model.forward

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(int(kwargs["pixel_values"].shape[0]))
        return original(*args, **kwargs)

    model.forward = counted
    return calls


def test_depth_runs_on_every_nth_frame_and_is_reused_between() -> None:
    torch.set_num_threads(1)
    frames = moving_frames(20)
    every = build_tiny_pipeline()
    third = build_tiny_pipeline().sibling(depth_every=3)  # its own models: the depth calls are counted apart
    every_calls, third_calls = _count_depth_calls(every), _count_depth_calls(third)
    outputs_every = [result.latent for image in frames for result in every.step(image)]
    outputs_third = [result.latent for image in frames for result in third.step(image)]
    # the warmup frames each get depth (it is normalised over the warmup batch); after them, frame 8 (no depth
    # yet) and every frame whose index is a multiple of 3
    warmup = third.warmup_frames
    after = [index for index in range(warmup, 20) if index == warmup or index % 3 == 0]
    assert len(every_calls) == 20 and len(third_calls) == warmup + len(after)
    assert len(outputs_every) == len(outputs_third) == 19  # T=2: one frame still in flight
    assert all(torch.isfinite(latent).all() for latent in outputs_third)
    # the same up to frame 9 (each had its own depth); frame 10 got frame 9's depth latent: it differs
    assert torch.allclose(outputs_every[9], outputs_third[9], atol=1e-5)
    assert not torch.allclose(outputs_every[10], outputs_third[10])


def test_depth_every_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="depth_every = 0 is not allowed: a whole number from 1"):
        build_tiny_pipeline().sibling(depth_every=0)
