"""The static stream step (tensor-only, read-only caches, in-place ring writes) equals the reference path.

The compiled, CUDA-graph and ONNX backends all run this same function; here it runs eagerly on the CPU in
float32 on the tiny model, over a stream longer than the cache window, for T = 1, 2 and 4.
"""

from __future__ import annotations

import pytest
import torch
from vcam.model.step_backends import (
    MODEL_BACKENDS,
    STEP_MODES,
    attach_step_backend,
    detach_step_backend,
    resolve_model_backend,
)
from vcam.model.tiny import build_tiny_pipeline

from tests.pipeline_helpers import moving_frames
from vcam.errors import ConfigError

FRAMES = 8 + 20  # warmup + more than the 16-slot window, so the ring wraps


def _latents(t_index_list: tuple[int, ...], mode: str | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    pipeline = build_tiny_pipeline(t_index_list=t_index_list, noise="fresh")
    if mode is not None:
        attach_step_backend(pipeline.unet, mode)
    latents = []
    for image in moving_frames(FRAMES):
        latents.extend(result.latent for result in pipeline.step(image) if result.latent is not None)
    caches = [cache.kv.clone() for step in pipeline._prompt.caches.caches for cache in step if cache.kv is not None]
    detach_step_backend(pipeline.unet)
    return latents, caches


@pytest.mark.parametrize("t_index_list", [(30,), (30, 40), (10, 20, 30, 40)])
def test_static_step_equals_reference(t_index_list: tuple[int, ...]) -> None:
    torch.set_num_threads(1)
    reference, reference_caches = _latents(t_index_list, None)
    static, static_caches = _latents(t_index_list, "static")
    assert len(static) == len(reference) == FRAMES - (len(t_index_list) - 1)
    worst = max(float((a - b).abs().max()) for a, b in zip(static, reference, strict=True))
    assert worst < 1e-4, worst
    # the ring writes in place put the same rows in the same slots
    assert len(static_caches) == len(reference_caches)
    for a, b in zip(static_caches, reference_caches, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_unknown_backend_names() -> None:
    assert "static" in STEP_MODES and MODEL_BACKENDS == ("auto", "torch", "onnx")
    with pytest.raises(ValueError, match="not one of"):
        attach_step_backend(build_tiny_pipeline().unet, "tensorrt")
    with pytest.raises(ConfigError, match="models.backend 'gpu' is not one of"):
        resolve_model_backend("gpu")
    assert resolve_model_backend("torch") == "torch"


def test_cuda_graph_backend_refuses_the_cpu() -> None:
    pipeline = build_tiny_pipeline()
    attach_step_backend(pipeline.unet, "cudagraph")
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        for image in moving_frames(10):
            pipeline.step(image)


def test_config_backend_key_is_validated() -> None:
    from vcam.config import config_from_dict

    assert config_from_dict({}).models.backend == "auto"
    assert config_from_dict({"models": {"backend": "onnx"}}).models.backend == "onnx"
    with pytest.raises(
        ConfigError, match="models.backend = 'tensorrt' is not allowed: choose one of auto, torch, onnx"
    ):
        config_from_dict({"models": {"backend": "tensorrt"}})


def test_onnx_backend_on_a_unet(tmp_path: object) -> None:
    pytest.importorskip("onnxruntime")
    from vcam.model.step_backends import use_model_backend

    pipeline = build_tiny_pipeline()
    assert use_model_backend(pipeline.unet, "torch", tmp_path) == "torch" and pipeline.unet.step_backend is None
    assert use_model_backend(pipeline.unet, "onnx", tmp_path) == "onnx"
    backend = pipeline.unet.step_backend
    assert use_model_backend(pipeline.unet, "onnx", tmp_path) == "onnx" and pipeline.unet.step_backend is backend
    # "auto" takes onnx only where onnxruntime has TensorRT (not on this CPU)
    assert resolve_model_backend("auto") == "torch"
