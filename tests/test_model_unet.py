"""StreamUNet: cache equivalence with a full recompute, causality, per-step caches, diffusers parity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.unets.unet_motion_model import UNetMotionModel
from vcam.model.unet import TINY_UNET_CONFIG, FrameGroupNorm, StreamUNet, tiny_stream_unet

from tests.model_helpers import LOADED_OUTPUT_TOLERANCE, assert_same_weights, install_reference, random_clip

SIZE = 8  # latent size: 8x8 and 4x4 feature maps keep the tests fast


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Tiny tensors: one thread is fastest, and the test box is shared."""
    torch.set_num_threads(1)


def stream_clip(unet: StreamUNet, clip: dict[str, torch.Tensor], timestep: int = 500) -> torch.Tensor:
    """Warmup on the first 8 frames, then stream the rest one frame per call at step 0; returns [N, 4, h, w]."""
    caches = unet.create_caches(1)
    latents, depth, prompt = clip["latents"], clip["depth"], clip["prompt"]
    with torch.no_grad():
        outs = [unet.warmup(latents[:8], timestep, prompt, depth[:8], caches, 0)]
        for index in range(8, latents.shape[0]):
            frame = slice(index, index + 1)
            outs.append(unet.stream(latents[frame], torch.tensor([timestep]), prompt, depth[frame], caches, [0]))
    return torch.cat(outs)


def recompute_clip(unet: StreamUNet, clip: dict[str, torch.Tensor], timestep: int = 500) -> torch.Tensor:
    """The whole clip in one call through ``unet`` (whatever its processors), [N, 4, h, w]."""
    video = clip["latents"].permute(1, 0, 2, 3)[None]  # [1, 4, N, h, w]
    depth = clip["depth"].permute(1, 0, 2, 3)[None]  # [1, 4, N, h, w]
    with torch.no_grad():
        return unet(video, timestep, clip["prompt"], depth)[0].permute(1, 0, 2, 3)


@pytest.fixture(scope="module")
def unet() -> StreamUNet:
    return tiny_stream_unet(seed=0)


@pytest.fixture(scope="module")
def reference() -> StreamUNet:
    model = tiny_stream_unet(seed=0)
    install_reference(model)
    return model


def test_cache_equals_full_recompute_beyond_the_window(unet: StreamUNet, reference: StreamUNet) -> None:
    clip = random_clip(26, SIZE, seed=1)  # 8 warmup + 18 streamed: the ring wraps more than twice
    torch.testing.assert_close(stream_clip(unet, clip), recompute_clip(reference, clip), rtol=1e-4, atol=2e-5)


def test_cache_equivalence_with_sdpa(unet: StreamUNet, reference: StreamUNet) -> None:
    clip = random_clip(18, SIZE, seed=2)
    unet.set_attention_backend("sdpa")
    try:
        streamed = stream_clip(unet, clip)
    finally:
        unet.set_attention_backend("auto")
    torch.testing.assert_close(streamed, recompute_clip(reference, clip), rtol=1e-4, atol=2e-5)


def test_changing_frame_k_never_changes_earlier_frames(unet: StreamUNet, reference: StreamUNet) -> None:
    clip = random_clip(14, SIZE, seed=3)
    changed = {name: tensor.clone() for name, tensor in clip.items()}
    changed["latents"][11] += 1.0
    before, after = stream_clip(unet, clip), stream_clip(unet, changed)
    assert torch.equal(before[:11], after[:11])
    assert not torch.allclose(before[12], after[12])  # the change reaches later frames through the cache
    full_before, full_after = recompute_clip(reference, clip), recompute_clip(reference, changed)
    torch.testing.assert_close(full_before[:11], full_after[:11], rtol=0, atol=1e-6)
    assert not torch.allclose(full_before[13], full_after[13])


def test_diffusers_clip_groupnorm_would_leak_the_future() -> None:
    """diffusers pools the motion-module GroupNorm over frames; that breaks causality, hence FrameGroupNorm."""
    torch.manual_seed(0)
    video = torch.randn(2, 32, 5, 3, 3)  # [B, C, F, H, W]
    norm = FrameGroupNorm(8, 32)
    expected = torch.stack([F.group_norm(video[:, :, f], 8, norm.weight, norm.bias, norm.eps) for f in range(5)], 2)
    torch.testing.assert_close(norm(video), expected)
    pooled = torch.nn.GroupNorm(8, 32)(video)
    changed = video.clone()
    changed[:, :, 4] += 3.0
    assert not torch.allclose(torch.nn.GroupNorm(8, 32)(changed)[:, :, 0], pooled[:, :, 0])
    assert torch.equal(norm(changed)[:, :, 0], norm(video)[:, :, 0])


def test_warmup_equals_diffusers_animatediff() -> None:
    """The warmup block alone == diffusers' bi-directional UNetMotionModel with the same weights."""
    torch.manual_seed(0)
    config = {key: value for key, value in TINY_UNET_CONFIG.items() if key != "depth_mapper_channels"}
    ours = StreamUNet(**TINY_UNET_CONFIG, motion_norm="clip").eval()  # diffusers' GroupNorm, for parity
    with torch.no_grad():
        for name, parameter in ours.unet.named_parameters():
            if "motion_modules" in name and "proj_out" in name:
                parameter.normal_(0, 0.1)  # diffusers' motion modules are not zero-init, make it certain anyway
    theirs = UNetMotionModel(**config, use_motion_mid_block=False).eval()
    theirs.load_state_dict(ours.unet.state_dict())
    clip = random_clip(8, SIZE, seed=4)
    caches = ours.create_caches(1)
    with torch.no_grad():
        streamed = ours.warmup(clip["latents"], 700, clip["prompt"], None, caches, 0)
        video = clip["latents"].permute(1, 0, 2, 3)[None]  # [1, 4, 8, h, w]
        expected = theirs(video, 700, clip["prompt"].expand(8, -1, -1)).sample[0].permute(1, 0, 2, 3)
    torch.testing.assert_close(streamed, expected, rtol=1e-4, atol=1e-5)
    assert caches.frames_seen(0) == 8


def test_entries_at_different_steps_use_only_their_step(unet: StreamUNet) -> None:
    clip = random_clip(10, SIZE, seed=5)
    batched, single = unet.create_caches(3), unet.create_caches(3)
    with torch.no_grad():
        for caches in (batched, single):
            for step, timestep in enumerate((900, 500, 100)):
                unet.warmup(clip["latents"][:8], timestep, clip["prompt"], clip["depth"][:8], caches, step)
        new, depth = clip["latents"][8:10], clip["depth"][8:10]
        together = unet.stream(new, torch.tensor([100, 900]), clip["prompt"], depth, batched, [2, 0])
        first = unet.stream(new[:1], torch.tensor([100]), clip["prompt"], depth[:1], single, [2])
        second = unet.stream(new[1:], torch.tensor([900]), clip["prompt"], depth[1:], single, [0])
    torch.testing.assert_close(together, torch.cat([first, second]), rtol=1e-5, atol=1e-5)
    assert [batched.frames_seen(step) for step in range(3)] == [9, 8, 9]
    for step in range(3):
        for mine, theirs in zip(batched.layers(step), single.layers(step), strict=True):
            torch.testing.assert_close(mine.kv, theirs.kv, rtol=1e-5, atol=1e-5)


def test_cache_bytes_same_after_20_and_200_frames(unet: StreamUNet) -> None:
    """Every layer's cache keeps its fixed size (16 slots) however long the stream."""
    caches = unet.create_caches(1)
    generator = torch.Generator().manual_seed(6)
    prompt = torch.randn(1, 77, 32, generator=generator)
    with torch.no_grad():
        unet.warmup(torch.randn(8, 4, 4, 4, generator=generator), 500, prompt, None, caches, 0)
        sizes = {}
        for frame in range(8, 200):
            unet.stream(torch.randn(1, 4, 4, 4, generator=generator), torch.tensor([500]), prompt, None, caches, [0])
            if frame + 1 in (20, 200):
                sizes[frame + 1] = caches.nbytes()
    assert caches.frames_seen(0) == 200
    # 4x4 and 2x2 feature maps, 32 and 64 channels, 2 attention layers per motion module, fp32, 16 slots
    per_slot = {32: 4 * 4 * 32, 64: 2 * 2 * 64}
    expected = sum(2 * 16 * 4 * per_slot[cache.kv.shape[2] * cache.kv.shape[4]] for cache in caches.layers(0))
    assert sizes[20] == sizes[200] == expected > 0


def test_depth_latent_is_added_to_conv_in(unet: StreamUNet) -> None:
    fresh = StreamUNet(**TINY_UNET_CONFIG)
    assert fresh.depth_mapper is not None
    assert not fresh.depth_mapper.conv_out.weight.any()  # zero-init: an untrained mapper changes nothing
    clip = random_clip(8, SIZE, seed=7)
    with torch.no_grad():
        plain = unet.warmup(clip["latents"], 500, clip["prompt"], None, unet.create_caches(1), 0)
        with_depth = unet.warmup(clip["latents"], 500, clip["prompt"], clip["depth"], unet.create_caches(1), 0)
    assert not torch.allclose(plain, with_depth)


def test_save_and_load_round_trip(unet: StreamUNet, tmp_path: pytest.TempPathFactory) -> None:
    unet.save_pretrained(tmp_path)
    loaded = StreamUNet.from_pretrained(tmp_path).eval()
    assert_same_weights(loaded, unet)
    clip = random_clip(10, SIZE, seed=8)
    torch.testing.assert_close(stream_clip(loaded, clip), stream_clip(unet, clip), **LOADED_OUTPUT_TOLERANCE)


def test_input_errors(unet: StreamUNet) -> None:
    caches = unet.create_caches(2)
    clip = random_clip(9, SIZE, seed=9)
    with pytest.raises(ValueError, match="warmup takes 1..8 frames, got 9"):
        unet.warmup(clip["latents"], 500, clip["prompt"], None, caches, 0)
    with pytest.raises(ValueError, match="distinct steps"):
        unet.stream(clip["latents"][:2], torch.tensor([500, 500]), clip["prompt"], None, caches, [0, 0])
    with pytest.raises(ValueError, match="step must be in 0..1, got 2"):
        unet.stream(clip["latents"][:1], torch.tensor([500]), clip["prompt"], None, caches, [2])
    with pytest.raises(ValueError, match="window 30 exceeds motion_max_seq_length 24"):
        unet.create_caches(1, window=30)
