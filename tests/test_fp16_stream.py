"""fp16 end to end (weights, activations and the KV cache) against the eager float32 path, on a stream longer
than the cache window.

The bound: max |x_fp16 - x_fp32| <= FP16_BOUND * max |x_fp32| over every output latent. fp16 rounds each value
with a relative error of at most 2**-11 (4.9e-4, its unit roundoff u); the UNet's norms keep errors relative to
the activations' scale instead of letting them compound layer after layer, and the T LCM steps of a frame each
add their own. Measured on the tiny model on the CPU (28 frames, T = 1, 2, 4): 2.2e-3 to 2.7e-3 of the largest
latent, about 5 u. The bound, 1e-2 (about 20 u), leaves a margin of 4 for other kernels (CUDA's tensor cores also
accumulate in fp32) while still failing on a real defect (a cache in the wrong slot or dtype moves latents by
their own size).
"""

from __future__ import annotations

import pytest
import torch
from vcam.model.step_backends import attach_step_backend
from vcam.model.tiny import build_tiny_pipeline

from tests.pipeline_helpers import moving_frames

FP16_BOUND = 1e-2
FRAMES = 8 + 20


def _stream(t_index_list: tuple[int, ...], device: str, dtype: torch.dtype, mode: str | None) -> list[torch.Tensor]:
    base = build_tiny_pipeline(t_index_list=t_index_list)
    for model in (base.unet, base.prompt_encoder.text_encoder, base.codec.vae, base.depth_encoder.model):  # type: ignore[union-attr]
        torch.nn.Module.to(model, device=device, dtype=dtype)
    pipeline = base.sibling()
    if mode is not None:
        attach_step_backend(pipeline.unet, mode)
    latents = [
        r.latent.float().cpu() for image in moving_frames(FRAMES) for r in pipeline.step(image) if r.latent is not None
    ]
    kv = pipeline._prompt.caches.caches[0][0].kv
    assert kv is not None and kv.dtype == dtype  # the KV cache is kept in the model's dtype
    return latents


def _check(reference: list[torch.Tensor], half: list[torch.Tensor]) -> None:
    assert len(half) == len(reference)
    scale = max(float(latent.abs().max()) for latent in reference)
    worst = max(float((a - b).abs().max()) for a, b in zip(half, reference, strict=True))
    assert worst <= FP16_BOUND * scale, (worst, scale)


@pytest.mark.parametrize("t_index_list", [(30, 40), (10, 20, 30, 40)])
def test_fp16_static_step_on_the_cpu(t_index_list: tuple[int, ...]) -> None:
    torch.set_num_threads(1)
    _check(_stream(t_index_list, "cpu", torch.float32, None), _stream(t_index_list, "cpu", torch.float16, "static"))


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["static", "cudagraph"])
@pytest.mark.parametrize("t_index_list", [(30,), (30, 40), (10, 20, 30, 40)])
def test_fp16_on_cuda_against_float32_eager(t_index_list: tuple[int, ...], mode: str) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    reference = _stream(t_index_list, "cuda", torch.float32, None)
    _check(reference, _stream(t_index_list, "cuda", torch.float16, mode))
