"""Real weights (skipped unless a style is downloaded): the loader builds a pipeline that streams frames.

Set VCAM_TEST_STYLE (default "pixar") and VCAM_TEST_CACHE (a Hugging Face cache folder holding the weights).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.pipeline_helpers import moving_frames


def _spec(device_size: int) -> object:
    from vcam.config import load_config
    from vcam.errors import WeightsError
    from vcam.store.store import resolve_style_paths
    from vcam.translators.live2diff import pipeline_spec

    config = load_config()
    if os.environ.get("VCAM_TEST_CACHE"):
        config.models.cache_dir = os.environ["VCAM_TEST_CACHE"]
    try:
        paths = resolve_style_paths(os.environ.get("VCAM_TEST_STYLE", "pixar"), config)
    except WeightsError as error:
        pytest.skip(f"style weights not on disk: {error}")
    return pipeline_spec(paths, width=device_size, height=device_size)


def _stream(pipeline: object, count: int, size: int) -> list[np.ndarray]:
    outputs: list[np.ndarray] = []
    for frame in moving_frames(count, width=size, height=size):
        outputs += pipeline(frame)  # type: ignore[operator]
    return outputs


@pytest.mark.weights
def test_real_style_streams_on_the_cpu() -> None:
    from vcam.model.loading import load_stream_pipeline

    spec = _spec(256)
    pipeline = load_stream_pipeline(spec, device="cpu", dtype="float32")  # type: ignore[arg-type]
    outputs = _stream(pipeline, 11, 256)  # 8 warmup frames, then one output per frame after T-1 (<= 3) calls
    assert len(outputs) == 11 - pipeline.latency_frames
    assert all(output.shape == (256, 256, 3) and output.std() > 1.0 for output in outputs)


@pytest.mark.gpu
@pytest.mark.weights
def test_real_style_streams_on_cuda_in_fp16() -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from vcam.model.loading import load_stream_pipeline

    spec = _spec(512)
    pipeline = load_stream_pipeline(spec, device="cuda", dtype="auto")  # type: ignore[arg-type]
    assert pipeline.dtype == torch.float16
    outputs = _stream(pipeline, 12, 512)
    assert len(outputs) == 12 - pipeline.latency_frames
