"""The Live2Diff streaming pipeline on tiny random models (CPU): stream batch, latency, memory, prompt change."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import numpy as np
import pytest
import torch
from vcam.model.pipeline import StreamPipeline, StreamResult
from vcam.model.priority import BACKGROUND_NICE
from vcam.model.similar_filter import SimilarFrameFilter
from vcam.model.tiny import build_tiny_pipeline

from tests.pipeline_helpers import moving_frames
from vcam.errors import ConfigError

T_INDEX_LISTS = [(30,), (30, 40), (20, 30, 40), (10, 20, 30, 40)]
WARMUP = 8


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def run_all(pipeline: StreamPipeline, frames: list[np.ndarray]) -> list[list[StreamResult]]:
    """The results of each call, then those of the final flush as one more entry."""
    per_call = [pipeline.step(frame) for frame in frames]
    flushed = pipeline.flush()
    tail_start = sum(len(results) for results in per_call)
    per_call.append([StreamResult(index=tail_start + i, image=image) for i, image in enumerate(flushed)])
    return per_call


def record_stream_calls(pipeline: StreamPipeline) -> list[dict[str, Any]]:
    """Wrap the UNet's `stream` to record each call's steps and text embeddings (the real call still runs)."""
    calls: list[dict[str, Any]] = []
    original = pipeline.unet.stream

    def recording(sample: torch.Tensor, timesteps: torch.Tensor, embeds: torch.Tensor, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        calls.append({"steps": list(kwargs["steps"]), "embeds": embeds.clone(), "timesteps": timesteps.tolist()})
        return original(sample, timesteps, embeds, *args, **kwargs)

    pipeline.unet.stream = recording  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize("t_index_list", T_INDEX_LISTS, ids=lambda t: f"T{len(t)}")
def test_stream_batch_equals_sequential_steps(t_index_list: tuple[int, ...]) -> None:
    frames = moving_frames(WARMUP + 6)
    pipelined = build_tiny_pipeline(t_index_list=t_index_list, noise="fixed")
    sequential = pipelined.sibling(stream_batch=False)
    pipelined_results = [r for results in [pipelined.step(f) for f in frames] for r in results]
    sequential_results = [r for results in [sequential.step(f) for f in frames] for r in results]
    count = len(pipelined_results)
    assert count == len(frames) - (len(t_index_list) - 1)
    assert [r.index for r in pipelined_results] == [r.index for r in sequential_results[:count]]
    for ours, reference in zip(pipelined_results, sequential_results[:count], strict=True):
        assert ours.latent is not None and reference.latent is not None
        torch.testing.assert_close(ours.latent, reference.latent, atol=1e-4, rtol=1e-4)
        assert np.abs(ours.image.astype(int) - reference.image.astype(int)).max() <= 1
    # the outputs follow the input (the equality above is not between constants)
    latents = [result.latent for result in pipelined_results]
    changes = [(a - b).abs().mean().item() for a, b in zip(latents[:-1], latents[1:], strict=True)]  # type: ignore[operator]
    assert min(changes) > 1e-2


def test_stream_batch_uses_one_unet_call_per_frame_with_all_steps() -> None:
    pipeline = build_tiny_pipeline(t_index_list=(20, 30, 40))
    calls = record_stream_calls(pipeline)
    for frame in moving_frames(WARMUP + 5):
        pipeline.step(frame)
    # no filler frames while the batch fills: 1, 2, then 3 entries, newest (noisiest) first
    assert [call["steps"] for call in calls] == [[0], [0, 1], [0, 1, 2], [0, 1, 2], [0, 1, 2]]
    timesteps = pipeline.schedule.timesteps.tolist()
    assert calls[-1]["timesteps"] == timesteps == [599, 399, 199]


@pytest.mark.parametrize("t_index_list", T_INDEX_LISTS, ids=lambda t: f"T{len(t)}")
def test_latency_and_bounded_memory_over_40_frames(t_index_list: tuple[int, ...]) -> None:
    delay = len(t_index_list) - 1
    pipeline = build_tiny_pipeline(t_index_list=t_index_list)
    assert pipeline.latency_frames == delay
    frames = moving_frames(40)
    cache_sizes = []
    for call, frame in enumerate(frames):
        indices = [result.index for result in pipeline.step(frame)]
        if call < WARMUP - 1:
            assert indices == []
        elif call == WARMUP - 1:
            assert indices == list(range(WARMUP))  # the warmup frames' outputs are emitted
        elif call < WARMUP + delay:
            assert indices == []  # the stream batch fills
        else:
            assert indices == [call - delay]  # output i is input i, exactly T-1 calls later
        assert len(pipeline._inflight) <= delay
        # a frame is written to step k's caches when it passes step k: no filler frame in any step
        streamed = call - (WARMUP - 1)
        written = [pipeline._prompt.caches.frames_seen(step) for step in range(delay + 1)]
        assert written == [WARMUP + max(0, streamed - step) if streamed >= 0 else 0 for step in range(delay + 1)]
        cache_sizes.append(pipeline.cache_nbytes())
    assert cache_sizes[20] == cache_sizes[-1] > 0
    assert not pipeline._finished
    tail = pipeline.flush()
    assert len(tail) == delay and not pipeline._inflight


def test_flush_before_the_warmup_is_full_translates_every_frame() -> None:
    pipeline = build_tiny_pipeline(t_index_list=(30, 40))
    outputs = [image for frame in moving_frames(5) for image in pipeline(frame)]
    assert outputs == []
    assert len(pipeline.flush()) == 5


def test_fresh_noise_is_seeded() -> None:
    frames = moving_frames(WARMUP + 3)

    def outputs(seed: int) -> list[np.ndarray]:
        pipeline = build_tiny_pipeline(noise="fresh", seed=seed)
        return [image for frame in frames for image in pipeline(frame)]

    first, again, other = outputs(3), outputs(3), outputs(4)
    assert len(first) == WARMUP + 2
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_reset_starts_the_stream_anew() -> None:
    frames = moving_frames(WARMUP + 2)
    pipeline = build_tiny_pipeline()
    before = [r.latent for f in frames for r in pipeline.step(f)]
    pipeline.reset()
    assert not pipeline.warmed_up and pipeline.frames_in == 0
    after = [r.latent for f in frames for r in pipeline.step(f)]
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b)


def test_prompt_change_runs_in_the_background_without_a_gap() -> None:
    pipeline = build_tiny_pipeline(t_index_list=(30, 40), prompt="old prompt")
    frames = moving_frames(40)
    calls = record_stream_calls(pipeline)
    old_embeds = pipeline.prompt_encoder("old prompt")
    new_embeds = pipeline.prompt_encoder("new prompt")
    assert not torch.equal(old_embeds, new_embeds)
    for frame in frames[:12]:
        pipeline.step(frame)
    old_caches = pipeline._prompt.caches
    pipeline.set_prompt("new prompt")
    assert pipeline.prompt_switch_pending
    outputs_per_call = []
    switched_at = None
    for call, frame in enumerate(frames[12:], start=12):
        outputs_per_call.append(len(pipeline.step(frame)))
        if switched_at is None and pipeline.prompt == "new prompt":
            switched_at = call
        if call == 14:
            assert pipeline.wait_prompt_switch(timeout=60)
    assert switched_at is not None and not pipeline.prompt_switch_pending
    assert outputs_per_call == [1] * len(outputs_per_call)  # one frame per call throughout: no gap
    assert pipeline._prompt.caches is not old_caches
    for call_index, recorded in enumerate(calls):
        expected = new_embeds if call_index + WARMUP >= switched_at else old_embeds
        assert torch.equal(recorded["embeds"][0], expected[0])
    # the new caches got the warmup on the most recent frames, then the stream frames after the switch
    assert pipeline._prompt.caches.frames_seen(0) == WARMUP + (len(frames) - switched_at)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_a_new_prompts_background_warmup_runs_below_the_frame_loop() -> None:
    """The background warmup of a new prompt runs `BACKGROUND_NICE` levels below the caller's thread; one run in
    the caller (`background=False`) leaves the caller's priority alone."""
    pipeline = build_tiny_pipeline(prompt="old prompt")
    for frame in moving_frames(WARMUP + 1):
        pipeline.step(frame)
    seen: list[int] = []
    make_state = pipeline._make_prompt_state

    def recording(prompt: str) -> Any:  # the first step of the warmup, in its thread
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return make_state(prompt)

    pipeline._make_prompt_state = recording  # type: ignore[method-assign]
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    pipeline.set_prompt("new prompt")
    assert pipeline.wait_prompt_switch(timeout=60)
    pipeline.set_prompt("third prompt", background=False)
    assert seen == [min(19, base + BACKGROUND_NICE), base]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base


def test_prompt_set_before_the_warmup_replaces_the_prompt() -> None:
    pipeline = build_tiny_pipeline(prompt="first")
    pipeline.step(moving_frames(1)[0])
    pipeline.set_prompt("second")
    assert pipeline.prompt == "second" and not pipeline.prompt_switch_pending
    assert torch.equal(pipeline.prompt_embeds, pipeline.prompt_encoder("second"))


def test_similar_frames_are_skipped_without_the_unet() -> None:
    pipeline = build_tiny_pipeline(t_index_list=(30,), similar_filter=SimilarFrameFilter(max_skips=3, seed=0))
    calls = record_stream_calls(pipeline)
    frames = moving_frames(WARMUP + 1)
    for frame in frames:
        pipeline.step(frame)
    assert len(calls) == 1
    still = frames[-1]
    results = [pipeline.step(still) for _ in range(4)]
    assert [len(r) for r in results] == [1, 1, 1, 1]
    assert [r[0].skipped for r in results] == [True, True, True, False]  # at most 3 skips in a row
    assert len(calls) == 2
    assert np.array_equal(results[0][0].image, results[1][0].image)


def test_similar_filter_skips_by_the_cosine_rule() -> None:
    frame = torch.linspace(-1, 1, 3 * 8 * 8).reshape(3, 8, 8)
    unlike = SimilarFrameFilter(threshold=0.98, seed=0)
    assert not unlike.should_skip(frame)
    assert not unlike.should_skip(-frame)  # cosine -1: probability 0
    same = SimilarFrameFilter(threshold=0.98, seed=0)
    same.should_skip(frame)
    assert same.should_skip(frame.clone())  # cosine 1: probability 1


@pytest.mark.parametrize("bad", [[], [40, 30], [50], [-1], [30, 30], [10, 20, 30, 40, 45]])
def test_bad_t_index_list_is_a_config_error(bad: list[int]) -> None:
    with pytest.raises(ConfigError, match="t_index_list"):
        build_tiny_pipeline(t_index_list=bad)


def test_wrong_frame_size_is_rejected_with_the_sizes() -> None:
    pipeline = build_tiny_pipeline()
    with pytest.raises(ValueError, match=r"\(32, 32, 3\) != \(64, 64, 3\)"):
        pipeline.step(np.zeros((32, 32, 3), dtype=np.uint8))


def test_taesd_and_no_depth_variants_run() -> None:
    frames = moving_frames(WARMUP + 1)
    for pipeline in (build_tiny_pipeline(vae="taesd"), build_tiny_pipeline(depth=False)):
        assert len([image for frame in frames for image in pipeline(frame)]) == WARMUP


def test_depth_is_normalised_per_frame_to_minus_one_one() -> None:
    pipeline = build_tiny_pipeline()
    assert pipeline.depth_encoder is not None
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    depth = pipeline.depth_encoder.depth_images(images)
    assert depth.shape == (2, 3, 64, 64)
    for frame in depth:
        assert frame.min().item() == pytest.approx(-1.0, abs=1e-3)
        assert frame.max().item() == pytest.approx(1.0, abs=1e-3)
        torch.testing.assert_close(frame[0], frame[2])


def test_clip_skip_picks_an_earlier_layer_and_embeddings_are_cached() -> None:
    last = build_tiny_pipeline(clip_skip=1).prompt_encoder
    penultimate = build_tiny_pipeline(clip_skip=2).prompt_encoder
    first = last("a cat")
    assert first is last("a cat")
    assert first.shape == (1, 77, 32)
    assert not torch.allclose(first, penultimate("a cat"))


def test_schedule_matches_the_spec() -> None:
    from vcam.model.scheduler import build_stream_schedule

    schedule = build_stream_schedule([30, 40])
    assert schedule.timesteps.tolist() == [399, 199]
    assert schedule.strength == pytest.approx(0.4)
    sample = torch.randn(2, 4, 8, 8)
    noise = torch.randn(2, 4, 8, 8)
    noisy = schedule.add_noise(sample, noise, [0, 1])
    # with the true noise as prediction, the LCM step recovers x0 up to c_skip
    torch.testing.assert_close(schedule.denoise(noisy, noise, [0, 1]), sample, atol=1e-4, rtol=1e-4)


def test_model_size_follows_the_output_aspect() -> None:
    from vcam.translators.live2diff import model_size_for_output

    assert model_size_for_output((512, 512), 1280, 720) == (512, 288)
    assert model_size_for_output((512, 512), 640, 480) == (512, 384)
    assert model_size_for_output((512, 512), 720, 1280) == (288, 512)
    assert model_size_for_output((512, 512), 512, 512) == (512, 512)


def test_clip_skip_2_is_the_penultimate_layer_with_the_final_layer_norm() -> None:
    """A1111's count: clip_skip 2 = output of layer N-1 of N, then CLIP's final layer norm (as diffusers does)."""
    encoder = build_tiny_pipeline(clip_skip=2).prompt_encoder
    text_encoder = encoder.text_encoder
    num_layers = int(text_encoder.config.num_hidden_layers)
    ids = encoder.tokenizer("a cat", padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        output = text_encoder(ids.input_ids, output_hidden_states=True)
    assert len(output.hidden_states) == num_layers + 1  # the embeddings, then each layer's output
    final_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
    torch.testing.assert_close(final_norm(output.hidden_states[num_layers]), output.last_hidden_state)
    with torch.no_grad():
        expected = final_norm(output.hidden_states[num_layers - 1])  # [1, 77, d]
    torch.testing.assert_close(encoder("a cat"), expected)


@pytest.mark.parametrize(("cosine", "probability"), [(0.97, 0.0), (0.99, 0.5), (0.995, 0.75), (1.0, 1.0)])
def test_similar_filter_skip_probability_follows_the_formula(cosine: float, probability: float) -> None:
    """max(0, 1 - (1 - cos) / (1 - 0.98)), measured over seeded draws."""
    reference = torch.zeros(3, 8, 8)
    reference.view(-1)[0] = 1.0
    similar = torch.zeros(3, 8, 8)
    similar.view(-1)[0] = cosine
    similar.view(-1)[1] = (1.0 - cosine**2) ** 0.5
    skips = 0
    trials = 2000
    for seed in range(trials):
        image_filter = SimilarFrameFilter(threshold=0.98, seed=seed)
        assert not image_filter.should_skip(reference)
        skips += image_filter.should_skip(similar)
    assert skips / trials == pytest.approx(probability, abs=0.04)


def test_similar_filter_skips_at_most_ten_in_a_row_by_default() -> None:
    image_filter = SimilarFrameFilter(seed=0)
    frame = torch.ones(3, 8, 8)
    decisions = [image_filter.should_skip(frame) for _ in range(24)]
    assert decisions == [False] + [True] * 10 + [False] + [True] * 10 + [False] + [True]
