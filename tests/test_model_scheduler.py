"""The LCM stream schedule against an independent computation from the spec and against diffusers' LCMScheduler."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from diffusers import LCMScheduler
from vcam.model.scheduler import build_lcm_scheduler, build_stream_schedule

from tests.pipeline_helpers import moving_frames

#: SD1.5's own scheduler_config.json (scaled_linear), as found in a downloaded SD1.5 folder
SD15_FOLDER_CONFIG = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "_class_name": "X"}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Tiny tensors: one thread is fastest, and the test box is shared."""
    torch.set_num_threads(1)


def spec_alphas_cumprod() -> torch.Tensor:
    """The spec's schedule written out: 1000 train steps, linear betas 0.00085..0.012 (float64)."""
    betas = torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def spec_lcm_scalings(timestep: int) -> tuple[float, float]:
    """LCM's boundary-condition scalings (Luo et al. 2023): sigma_data 0.5, timestep scaled by 10."""
    scaled = 10.0 * timestep
    return 0.25 / (scaled**2 + 0.25), scaled / (scaled**2 + 0.25) ** 0.5


@pytest.mark.parametrize("config", [None, SD15_FOLDER_CONFIG], ids=["default", "sd15-folder"])
def test_alphas_are_the_linear_betas_of_the_spec(config: dict[str, Any] | None) -> None:
    schedule = build_stream_schedule([10, 30, 40], build_lcm_scheduler(config))
    alphas = spec_alphas_cumprod()
    assert schedule.timesteps.tolist() == [799, 399, 199]
    expected = torch.tensor([float(alphas[t]) for t in (799, 399, 199)])
    torch.testing.assert_close(schedule.sqrt_alpha, expected.sqrt().float(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(schedule.sqrt_beta, (1 - expected).sqrt().float(), rtol=1e-6, atol=1e-7)


def test_every_index_maps_to_999_minus_20_i_and_strength() -> None:
    # a stream takes at most 4 steps (the one t_index_list rule), so every index is checked 4 at a time
    timesteps = [
        timestep
        for first in range(0, 50, 4)
        for timestep in build_stream_schedule(list(range(first, min(first + 4, 50)))).timesteps.tolist()
    ]
    assert timesteps == [999 - 20 * index for index in range(50)]
    assert build_stream_schedule([30, 40]).strength == pytest.approx(1 - 30 / 50)
    assert build_stream_schedule([25, 31, 37, 43]).strength == pytest.approx(1 - 25 / 50)


def test_boundary_condition_scalings() -> None:
    schedule = build_stream_schedule([0, 30, 49])
    for step, timestep in enumerate((999, 399, 19)):
        c_skip, c_out = spec_lcm_scalings(timestep)
        assert float(schedule.c_skip[step]) == pytest.approx(c_skip, rel=1e-5)
        assert float(schedule.c_out[step]) == pytest.approx(c_out, rel=1e-5)


def test_denoise_and_add_noise_match_diffusers_lcm_scheduler() -> None:
    """Per entry, `denoise` is LCMScheduler.step's `denoised` and `add_noise` its `add_noise`, each at its own t."""
    schedule = build_stream_schedule([20, 30, 40])
    theirs: Any = LCMScheduler(beta_schedule="linear", beta_start=0.00085, beta_end=0.012, original_inference_steps=50)
    theirs.set_timesteps(50)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(3, 4, 8, 8, generator=generator)
    noise_pred = torch.randn(3, 4, 8, 8, generator=generator)
    steps = [2, 0, 1]  # entries at different steps in one batch
    ours = schedule.denoise(sample, noise_pred, steps)
    for entry, step in enumerate(steps):
        timestep = int(schedule.timesteps[step])
        theirs._step_index = None  # look the timestep up afresh
        output = theirs.step(noise_pred[entry : entry + 1], timestep, sample[entry : entry + 1], generator=generator)
        torch.testing.assert_close(ours[entry : entry + 1], output.denoised, rtol=1e-5, atol=1e-5)
    noisy = schedule.add_noise(sample, noise_pred, steps)
    expected = theirs.add_noise(sample, noise_pred, schedule.timesteps[steps])
    torch.testing.assert_close(noisy, expected, rtol=1e-5, atol=1e-6)


def test_pipeline_renoises_to_the_next_timestep_and_outputs_x0() -> None:
    """Stream batch at T=2, checked with the spec's alphas: the new frame is noised to t0 from its latent, the
    entry at step 1 is the previous call's x0 re-noised to t1 with that step's fixed noise, the output is its x0."""
    from vcam.model.tiny import build_tiny_pipeline

    pipeline = build_tiny_pipeline(t_index_list=(30, 40), noise="fixed")
    alphas = spec_alphas_cumprod()
    calls: list[dict[str, torch.Tensor]] = []
    original = pipeline.unet.stream

    def recording(sample: torch.Tensor, timesteps: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = original(sample, timesteps, *args, **kwargs)
        calls.append({"sample": sample.clone(), "pred": out.clone(), "timesteps": timesteps.clone()})
        return out

    pipeline.unet.stream = recording  # type: ignore[method-assign]
    frames = moving_frames(11)
    results = [pipeline.step(frame) for frame in frames]
    noise = pipeline._stream_noise._fixed  # [T, 4, h, w]
    assert [call["timesteps"].tolist() for call in calls] == [[399], [399, 199], [399, 199]]

    def lcm_x0(sample: torch.Tensor, pred: torch.Tensor, t: int) -> torch.Tensor:
        a = alphas[t].float()
        x0 = (sample - (1 - a).sqrt() * pred) / a.sqrt()
        c_skip, c_out = spec_lcm_scalings(t)
        return c_out * x0 + c_skip * sample

    latent = pipeline.codec.encode(pipeline._to_tensor(frames[10]))[0]  # [4, h, w]
    a0, a1 = alphas[399].float(), alphas[199].float()
    torch.testing.assert_close(calls[2]["sample"][0], a0.sqrt() * latent + (1 - a0).sqrt() * noise[0])
    x0_first = lcm_x0(calls[1]["sample"][0], calls[1]["pred"][0], 399)
    torch.testing.assert_close(calls[2]["sample"][1], a1.sqrt() * x0_first + (1 - a1).sqrt() * noise[1])
    emitted = results[10][0]
    assert emitted.index == 9 and emitted.latent is not None
    torch.testing.assert_close(emitted.latent, lcm_x0(calls[2]["sample"][1], calls[2]["pred"][1], 199))
    assert not np.array_equal(results[9][0].image, emitted.image)
