"""The streaming temporal attention and its KV cache, at the level of one attention layer."""

from __future__ import annotations

from typing import cast

import pytest
import torch
from diffusers.models.attention_processor import Attention
from vcam.model.stream_attention import (
    KVCache,
    SlotPositionalEncoding,
    StreamCaches,
    StreamContext,
    StreamTemporalAttnProcessor,
    resolve_backend,
    training_attention_mask,
)

DIM = 32
HEADS = 2
ROWS = 6  # h*w of a tiny feature map


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Tiny tensors: one thread is fastest, and the test box is shared."""
    torch.set_num_threads(1)


def make_layer(backend: str = "auto") -> tuple[Attention, StreamContext]:
    torch.manual_seed(0)
    attn = Attention(query_dim=DIM, heads=HEADS, dim_head=DIM // HEADS, bias=False).eval()
    context = StreamContext()
    attn.set_processor(StreamTemporalAttnProcessor(SlotPositionalEncoding(DIM, 24), 0, context, backend))
    return attn, context


def run_stream(attn: Attention, context: StreamContext, caches: list[KVCache], frames: torch.Tensor) -> torch.Tensor:
    """Warmup on frames[:8], then stream the rest one by one; returns outputs [rows, F, C]."""
    context.mode, context.entry_caches = "warmup", [caches]
    outs = [attn(frames[:, :8])]
    context.mode = "stream"
    for index in range(8, frames.shape[1]):
        outs.append(attn(frames[:, index : index + 1]))
    context.mode, context.entry_caches = "full", []
    return torch.cat(outs, dim=1)


def test_training_mask_rows() -> None:
    mask = training_attention_mask(16, 8)
    assert mask[:8, :8].all() and not mask[:8, 8:].any()
    assert mask[12].tolist() == [True] * 13 + [False] * 3
    assert mask[15].all()


def test_ring_fill_positions_are_natural_then_steady() -> None:
    cache = KVCache(warmup_frames=8, window=16)
    cache.write_warmup(torch.zeros(ROWS, HEADS, 8, 4), torch.zeros(ROWS, HEADS, 8, 4))
    cache.append(torch.zeros(ROWS, HEADS, 1, 4), torch.zeros(ROWS, HEADS, 1, 4))
    layout = cache.layout()
    assert layout.query_position == 8
    assert layout.visible_positions() == list(range(9))
    assert sum(layout.valid) == 9  # the 7 empty ring slots are masked
    for _ in range(2):
        cache.append(torch.zeros(ROWS, HEADS, 1, 4), torch.zeros(ROWS, HEADS, 1, 4))
    assert cache.layout().query_position == 10


@pytest.mark.parametrize("streamed", [8, 9, 13, 50])
def test_steady_state_matches_last_row_of_training_mask(streamed: int) -> None:
    cache = KVCache(warmup_frames=8, window=16)
    cache.write_warmup(torch.zeros(ROWS, HEADS, 8, 4), torch.zeros(ROWS, HEADS, 8, 4))
    for _ in range(streamed):
        cache.append(torch.zeros(ROWS, HEADS, 1, 4), torch.zeros(ROWS, HEADS, 1, 4))
    layout = cache.layout()
    last_row = training_attention_mask(16, 8)[15]
    assert layout.query_position == 15
    assert layout.visible_positions() == torch.nonzero(last_row).flatten().tolist()
    # the newest frame sits at PE 15 and the slot written next (the oldest frame) at PE 8
    newest_slot = 8 + (streamed - 1) % 8
    oldest_slot = 8 + streamed % 8
    assert layout.key_positions[newest_slot] == 15
    assert layout.key_positions[oldest_slot] == 8


def test_configurable_sizes() -> None:
    cache = KVCache(warmup_frames=2, window=5)
    cache.write_warmup(torch.zeros(ROWS, HEADS, 2, 4), torch.zeros(ROWS, HEADS, 2, 4))
    for _ in range(7):
        cache.append(torch.zeros(ROWS, HEADS, 1, 4), torch.zeros(ROWS, HEADS, 1, 4))
    layout = cache.layout()
    assert layout.query_position == 4
    assert layout.visible_positions() == torch.nonzero(training_attention_mask(5, 2)[4]).flatten().tolist()


def test_cache_bytes_fixed_after_20_and_200_frames() -> None:
    attn, context = make_layer()
    caches = [KVCache()]
    generator = torch.Generator().manual_seed(1)
    run_stream(attn, context, caches, torch.randn(ROWS, 20, DIM, generator=generator))
    after_20 = caches[0].nbytes()
    context.mode, context.entry_caches = "stream", [caches]
    for _ in range(180):
        attn(torch.randn(ROWS, 1, DIM, generator=generator))
    assert caches[0].frames_seen == 200
    assert caches[0].nbytes() == after_20 == 2 * ROWS * HEADS * 16 * (DIM // HEADS) * 4


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_stream_equals_masked_recompute(backend: str) -> None:
    """Frame by frame with the cache == per-frame attention over warmup + window at the spec's positions."""
    attn, context = make_layer(backend)
    frames = torch.randn(ROWS, 30, DIM, generator=torch.Generator().manual_seed(2))
    streamed = run_stream(attn, context, [KVCache()], frames)
    pe = cast(StreamTemporalAttnProcessor, attn.processor).pos_table.table[0]
    expected = []
    for index in range(30):
        if index < 8:
            keys, positions, query_position = list(range(8)), list(range(8)), index
        else:
            query_position = 8 + min(index - 8, 7)
            recent = list(range(max(8, index - 7), index + 1))
            keys = list(range(8)) + recent
            positions = list(range(8)) + [query_position - (index - f) for f in recent]
        query = attn.to_q(frames[:, index : index + 1] + pe[query_position]).view(ROWS, 1, HEADS, -1).transpose(1, 2)
        inputs = frames[:, keys] + pe[positions]
        key = attn.to_k(inputs).view(ROWS, len(keys), HEADS, -1).transpose(1, 2)
        value = attn.to_v(inputs).view(ROWS, len(keys), HEADS, -1).transpose(1, 2)
        out = ((query @ key.transpose(-1, -2)) * attn.scale).softmax(-1) @ value
        expected.append(attn.to_out[0](out.transpose(1, 2).reshape(ROWS, 1, -1)))
    torch.testing.assert_close(streamed, torch.cat(expected, dim=1), rtol=1e-5, atol=1e-5)


def test_backends_agree_while_ring_fills() -> None:
    frames = torch.randn(ROWS, 12, DIM, generator=torch.Generator().manual_seed(3))
    outputs = []
    for backend in ("math", "sdpa"):
        attn, context = make_layer(backend)
        outputs.append(run_stream(attn, context, [KVCache()], frames))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


def test_entries_use_only_their_own_cache() -> None:
    attn, context = make_layer()
    generator = torch.Generator().manual_seed(4)
    caches = StreamCaches(num_steps=3, num_layers=1)
    alone = StreamCaches(num_steps=3, num_layers=1)
    for step in range(3):
        warm = torch.randn(ROWS, 8, DIM, generator=generator)
        for target in (caches, alone):
            context.mode, context.entry_caches = "warmup", [target.layers(step)]
            attn(warm)
    new = torch.randn(2 * ROWS, 1, DIM, generator=generator)
    context.mode, context.entry_caches = "stream", [caches.layers(2), caches.layers(0)]
    together = attn(new)
    context.entry_caches = [alone.layers(2)]
    first = attn(new[:ROWS])
    context.entry_caches = [alone.layers(0)]
    second = attn(new[ROWS:])
    torch.testing.assert_close(together, torch.cat([first, second]), rtol=1e-6, atol=1e-6)
    assert [caches.frames_seen(step) for step in range(3)] == [9, 8, 9]
    for step in range(3):
        assert torch.equal(caches.layers(step)[0].kv, alone.layers(step)[0].kv)


def test_reset_and_errors() -> None:
    cache = KVCache()
    cache.write_warmup(torch.zeros(ROWS, HEADS, 8, 4), torch.zeros(ROWS, HEADS, 8, 4))
    with pytest.raises(ValueError, match="already holds 8 frames"):
        cache.write_warmup(torch.zeros(ROWS, HEADS, 8, 4), torch.zeros(ROWS, HEADS, 8, 4))
    with pytest.raises(ValueError, match="do not fit the 8 warmup slots"):
        KVCache().write_warmup(torch.zeros(ROWS, HEADS, 9, 4), torch.zeros(ROWS, HEADS, 9, 4))
    with pytest.raises(ValueError, match="resolution, device or dtype changed"):
        cache.append(torch.zeros(ROWS, HEADS, 1, 4, dtype=torch.float64), torch.zeros(ROWS, HEADS, 1, 4))
    nbytes = cache.nbytes()
    cache.reset()
    assert cache.frames_seen == 0 and cache.nbytes() == nbytes
    cache.write_warmup(torch.zeros(ROWS, HEADS, 8, 4), torch.zeros(ROWS, HEADS, 8, 4))
    cache.release()
    assert cache.nbytes() == 0
    with pytest.raises(ValueError, match="warmup_frames must be in 0..15"):
        KVCache(warmup_frames=16, window=16)
    with pytest.raises(ValueError, match="attention backend must be one of"):
        resolve_backend("flash", torch.device("cpu"))
    assert resolve_backend("auto", torch.device("cpu")) == "math"
    assert resolve_backend("auto", torch.device("cpu"), cached=False) == "sdpa"
    assert resolve_backend("xformers", torch.device("cpu")) == "sdpa"
