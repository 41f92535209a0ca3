"""The encode overlap (vcam.model.overlap) on the CPU: the streams are no-ops there, the one-frame-later schedule
is not. With overlap on, call k+1 gives exactly what call k gives without it (same frames, same order, the same
latents within float tolerance), through the warmup, the steady state, the flush, a reset, a skipped frame, a
prompt switch, several streams in one UNet call and the static step backend; on CUDA (marked gpu) the encode
runs on the side stream and the result stays within the fp16 bound of the float32 eager path."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from vcam.model.batch import batched_step
from vcam.model.overlap import resolve_overlap
from vcam.model.pipeline import StreamPipeline, StreamResult
from vcam.model.similar_filter import SimilarFrameFilter
from vcam.model.step_backends import attach_step_backend
from vcam.model.tiny import build_tiny_pipeline

from tests.pipeline_helpers import moving_frames
from tests.test_fp16_stream import FP16_BOUND
from vcam.errors import ConfigError

WARMUP = 8
T_INDEX_LISTS = [(30,), (30, 40), (10, 20, 30, 40)]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


Run = tuple[list[list[StreamResult]], list[np.ndarray]]


def run_stream(pipeline: StreamPipeline, frames: list[np.ndarray]) -> Run:
    """Each call's results, and the flush's images."""
    calls = [pipeline.step(frame) for frame in frames]
    return calls, pipeline.flush()


def assert_same_images(ours: list[np.ndarray], reference: list[np.ndarray]) -> None:
    assert len(ours) == len(reference)
    for got, want in zip(ours, reference, strict=True):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def assert_same_results(ours: list[StreamResult], reference: list[StreamResult]) -> None:
    assert [(r.index, r.skipped) for r in ours] == [(r.index, r.skipped) for r in reference]
    for got, want in zip(ours, reference, strict=True):
        if want.latent is not None:
            assert got.latent is not None
            torch.testing.assert_close(got.latent, want.latent, atol=1e-4, rtol=1e-4)
    assert_same_images([r.image for r in ours], [r.image for r in reference])


def assert_one_call_later(overlapped: Run, plain: Run) -> None:
    """Call k + 1 with overlap gives what call k gives without; the flush gives the last call's and the tail."""
    (calls, tail), (plain_calls, plain_tail) = overlapped, plain
    assert calls[0] == []
    for ours, reference in zip(calls[1:], plain_calls[:-1], strict=True):
        assert_same_results(ours, reference)
    assert_same_images(tail, [r.image for r in plain_calls[-1]] + plain_tail)


@pytest.mark.parametrize("depth", [True, False], ids=["depth", "no-depth"])
@pytest.mark.parametrize("t_index_list", T_INDEX_LISTS, ids=lambda t: f"T{len(t)}")
def test_overlap_gives_the_same_outputs_one_call_later(t_index_list: tuple[int, ...], depth: bool) -> None:
    frames = moving_frames(WARMUP + 10)
    plain = build_tiny_pipeline(t_index_list=t_index_list, noise="fresh", depth=depth)
    overlapped = plain.sibling(overlap=True)
    assert overlapped.latency_frames == plain.latency_frames + 1 == len(t_index_list)
    overlapped_calls, tail = run_stream(overlapped, frames)
    assert_one_call_later((overlapped_calls, tail), run_stream(plain, frames))
    # exact counts: 8 calls collect, the 9th runs the warmup (8 outputs), the batch fills for T-1 calls, then
    # one output per call; the flush gives the last frame and the T-1 still in flight
    steps = len(t_index_list)
    streaming = len(frames) - WARMUP - 1 - (steps - 1)
    assert [len(r) for r in overlapped_calls] == [0] * WARMUP + [WARMUP] + [0] * (steps - 1) + [1] * streaming
    assert len(tail) == steps
    # the outputs follow the input (the equality above is not between constants)
    latents = [r.latent for results in overlapped_calls for r in results if r.latent is not None]
    assert min((a - b).abs().mean().item() for a, b in zip(latents[:-1], latents[1:], strict=True)) > 1e-2


def test_the_unet_call_comes_before_the_next_frames_encode() -> None:
    """Steady state: the UNet call (frame k-1) is issued first, then frame k's encode and depth, then the decode."""
    pipeline = build_tiny_pipeline(t_index_list=(30, 40), overlap=True)
    log: list[str] = []
    for owner, name, label in (
        (pipeline.unet, "stream", "unet"),
        (pipeline.codec, "encode", "encode"),
        (pipeline.codec, "decode", "decode"),
        (pipeline.depth_encoder, "predict", "depth"),
    ):
        original = getattr(owner, name)

        def wrapped(*args: Any, _original: Any = original, _label: str = label, **kwargs: Any) -> Any:
            log.append(_label)
            return _original(*args, **kwargs)

        setattr(owner, name, wrapped)
    frames = moving_frames(WARMUP + 4)
    for frame in frames[:-1]:
        pipeline.step(frame)
    log.clear()
    pipeline.step(frames[-1])
    # encode = the frame's latent, depth = its DPT estimate, encode = its depth latent
    assert log == ["unet", "encode", "depth", "encode", "decode"]
    plain = pipeline.sibling(overlap=False)
    for frame in frames[:-1]:
        plain.step(frame)
    log.clear()
    plain.step(frames[-1])
    assert log == ["encode", "depth", "encode", "unet", "decode"]


def test_flush_finishes_every_frame_at_any_point() -> None:
    frames = moving_frames(WARMUP + 3)
    for count in (1, WARMUP - 1, WARMUP, WARMUP + 1, WARMUP + 3):
        pipeline = build_tiny_pipeline(t_index_list=(30, 40), overlap=True)
        emitted = [r.index for frame in frames[:count] for r in pipeline.step(frame)]
        assert len(emitted) + len(pipeline.flush()) == count, count
        assert not pipeline._overlap.holding and not pipeline._inflight
        assert pipeline.flush() == []


def test_reset_drops_the_held_frame() -> None:
    frames = moving_frames(WARMUP + 4)
    pipeline = build_tiny_pipeline(t_index_list=(30, 40), overlap=True)
    before = run_stream(pipeline, frames)
    for frame in frames[: WARMUP + 2]:
        pipeline.step(frame)
    assert pipeline._overlap.holding
    pipeline.reset()
    assert not pipeline._overlap.holding and pipeline.frames_in == 0 and not pipeline.warmed_up
    assert pipeline.flush() == []  # nothing held: the dropped frame is not translated after the break
    after = run_stream(pipeline, frames)
    for ours, reference in zip(after[0], before[0], strict=True):
        assert_same_results(ours, reference)
    assert_same_images(after[1], before[1])


def test_skipped_frames_never_reach_the_unet_and_come_one_call_later() -> None:
    moving = moving_frames(WARMUP + 6)
    frames = moving[: WARMUP + 2] + [moving[WARMUP + 1]] * 4 + moving[WARMUP + 2 :]

    def run(overlap: bool) -> tuple[Run, int]:
        pipeline = build_tiny_pipeline(
            t_index_list=(30,), similar_filter=SimilarFrameFilter(max_skips=3, seed=0), overlap=overlap
        )
        unet_calls = 0
        original = pipeline.unet.stream

        def counting(*args: Any, **kwargs: Any) -> torch.Tensor:
            nonlocal unet_calls
            unet_calls += 1
            return original(*args, **kwargs)

        pipeline.unet.stream = counting  # type: ignore[method-assign]
        return run_stream(pipeline, frames), unet_calls

    plain, plain_unet_calls = run(False)
    overlapped, overlapped_unet_calls = run(True)
    skipped = [r.index for results in overlapped[0] for r in results if r.skipped]
    assert skipped == [WARMUP + 2, WARMUP + 3, WARMUP + 4]  # at most 3 skips in a row
    assert overlapped_unet_calls == plain_unet_calls == len(frames) - WARMUP - len(skipped)
    assert_one_call_later(overlapped, plain)


def test_prompt_switch_with_overlap() -> None:
    """A switch requested one call later (the same processed frames) gives the same outputs one call later."""
    frames = moving_frames(WARMUP + 10)
    switch_after = WARMUP + 3

    def run(overlap: bool) -> Run:
        pipeline = build_tiny_pipeline(t_index_list=(30, 40), prompt="old prompt", overlap=overlap, noise="fresh")
        calls = []
        for call, frame in enumerate(frames):
            calls.append(pipeline.step(frame))
            if call == switch_after + int(overlap):
                pipeline.set_prompt("new prompt", background=False)
                assert pipeline.prompt == "new prompt"
        return calls, pipeline.flush()

    plain, overlapped = run(False), run(True)
    assert_one_call_later(overlapped, plain)
    assert [len(r) for r in overlapped[0][WARMUP + 2 :]] == [1] * (len(frames) - WARMUP - 2)  # no gap


def test_batched_streams_with_overlap_equal_each_alone() -> None:
    frames_a = moving_frames(WARMUP + 5, seed=0)
    frames_b = moving_frames(WARMUP + 5, seed=1)[::-1]
    shared = build_tiny_pipeline(t_index_list=(20, 30, 40))
    batched_a = shared.sibling(seed=3, overlap=True)
    batched_b = shared.sibling(seed=7, prompt="another prompt", overlap=True)
    alone_a = build_tiny_pipeline(t_index_list=(20, 30, 40)).sibling(seed=3)
    alone_b = build_tiny_pipeline(t_index_list=(20, 30, 40)).sibling(seed=7, prompt="another prompt")
    log: list[str] = []
    original_entries = shared.unet.stream_entries
    original_encode = shared.codec.encode

    def counting(sample: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        log.append(f"unet{sample.shape[0]}")
        return original_entries(sample, *args, **kwargs)  # type: ignore[arg-type]

    def encoding(images: torch.Tensor) -> torch.Tensor:
        log.append("encode")
        return original_encode(images)

    shared.unet.stream_entries = counting  # type: ignore[method-assign]
    shared.codec.encode = encoding  # type: ignore[method-assign]
    batched = [batched_step([batched_a, batched_b], [a, b]) for a, b in zip(frames_a, frames_b, strict=True)]
    alone = [(alone_a.step(a), alone_b.step(b)) for a, b in zip(frames_a, frames_b, strict=True)]
    # the UNet calls come one tick later than without overlap (1+1, 2+2, then 3+3 entries), and in a tick with
    # a UNet call both streams' next encodes (latent and depth latent each) come right after it
    assert [entry for entry in log if entry.startswith("unet")] == ["unet2", "unet4", "unet6", "unet6"]
    assert log[-5:] == ["unet6", "encode", "encode", "encode", "encode"]
    assert batched[0] == [[], []]
    for (got_a, got_b), (want_a, want_b) in zip(batched[1:], alone[:-1], strict=True):
        assert_same_results(got_a, want_a)
        assert_same_results(got_b, want_b)


def test_static_step_backend_with_overlap() -> None:
    frames = moving_frames(WARMUP + 20)  # longer than the cache window
    plain = build_tiny_pipeline(t_index_list=(30, 40), noise="fresh")
    reference = run_stream(plain, frames)
    overlapped = build_tiny_pipeline(t_index_list=(30, 40), noise="fresh", overlap=True)
    attach_step_backend(overlapped.unet, "static")
    assert_one_call_later(run_stream(overlapped, frames), reference)


def test_translator_warmup_and_latency_with_overlap() -> None:
    from vcam.translators.live2diff import Live2DiffTranslator

    frames = moving_frames(WARMUP + 8)
    plain = Live2DiffTranslator(build_tiny_pipeline(t_index_list=(30, 40)))
    overlapped = Live2DiffTranslator(build_tiny_pipeline(t_index_list=(30, 40), overlap=True))
    for translator in (plain, overlapped):
        translator.warmup(frames[:WARMUP])
        assert not translator.warming_up  # the warmup ran before going live, not on the first live call
    assert overlapped.latency_frames == plain.latency_frames + 1 == 2
    plain_out = [plain(frame) for frame in frames[WARMUP:]]
    overlapped_out = [overlapped(frame) for frame in frames[WARMUP:]]
    assert [out is None for out in overlapped_out] == [True] * 2 + [False] * (len(frames) - WARMUP - 2)
    for ours, reference in zip(overlapped_out[1:], plain_out[:-1], strict=True):
        assert (ours is None) == (reference is None)
        if ours is not None and reference is not None:
            assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1


def test_overlap_setting() -> None:
    from vcam.config import config_from_dict

    assert config_from_dict({}).models.overlap == "auto"
    assert config_from_dict({"models": {"overlap": "on"}}).models.overlap == "on"
    with pytest.raises(ConfigError, match="models.overlap = 'yes' is not allowed: use one of auto, on, off"):
        config_from_dict({"models": {"overlap": "yes"}})
    assert (
        resolve_overlap("auto", "cuda", True)
        and not resolve_overlap("auto", "cuda", False)
        and not resolve_overlap("auto", "cpu", True)
        and not resolve_overlap("auto", "mps", True)
    )
    assert resolve_overlap("on", "cpu", False) and not resolve_overlap("off", "cuda", True)


def _on_cuda(dtype: torch.dtype, overlap: bool) -> StreamPipeline:
    base = build_tiny_pipeline(t_index_list=(30, 40), noise="fresh")
    for model in (base.unet, base.prompt_encoder.text_encoder, base.codec.vae, base.depth_encoder.model):  # type: ignore[union-attr]
        torch.nn.Module.to(model, device="cuda", dtype=dtype)
    return base.sibling(overlap=overlap)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", [None, "cudagraph"])
def test_overlap_on_cuda_encodes_on_the_side_stream(mode: str | None) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    frames = moving_frames(WARMUP + 20)  # longer than the cache window
    reference, _ = run_stream(_on_cuda(torch.float32, overlap=False), frames)
    pipeline = _on_cuda(torch.float16, overlap=True)
    if mode is not None:
        attach_step_backend(pipeline.unet, mode)
    encode_streams: list[torch.cuda.Stream] = []
    original = pipeline._encode

    def encoding(index: int, pixels: torch.Tensor) -> Any:
        encode_streams.append(torch.cuda.current_stream())
        return original(index, pixels)

    pipeline._encode = encoding  # type: ignore[method-assign]
    main = torch.cuda.current_stream()
    overlapped, _ = run_stream(pipeline, frames)
    side = pipeline._overlap.stream
    assert side is not None and side != main
    assert len(encode_streams) == len(frames) and all(stream == side for stream in encode_streams)
    assert overlapped[0] == []
    assert [[r.index for r in results] for results in overlapped[1:]] == [
        [r.index for r in results] for results in reference[:-1]
    ]
    # latents one call later within the fp16 bound of the float32 eager path (tests/test_fp16_stream.py)
    ours = [r.latent.float().cpu() for results in overlapped for r in results if r.latent is not None]
    want = [r.latent.float().cpu() for results in reference for r in results if r.latent is not None]
    assert len(ours) == len(want) - 1 == len(frames) - 2  # the last frame and the tail come from the flush
    scale = max(float(latent.abs().max()) for latent in want)
    worst = max(float((a - b).abs().max()) for a, b in zip(ours, want, strict=False))
    assert worst <= FP16_BOUND * scale, (worst, scale)
    assert pipeline.times.per_call_ms()["encode"] > 0  # the side stream's stages are timed with events
