"""The fused Triton kernel against the plain ("math") kernels, run by Triton's interpreter on the CPU.

Not collected by the suite itself (the name does not match ``test_*.py``): ``tests/test_fused_attention.py``
runs this module in a child pytest with ``TRITON_INTERPRET=1`` set before triton is imported, so the
interpreter never leaks into other tests. Run alone: ``TRITON_INTERPRET=1 python -m pytest
tests/interpreted_fused_attention.py``.

Tolerances. float32 kernel against kernel: the fused kernel sums the 40-term dot products and the 17-term
softmax in another order (an online softmax) than the matmuls; each order's rounding error is at most about
(40 + 17) * 2**-24 = 3.4e-6 of the terms' magnitude, so 1e-5 (absolute and relative, values of order 1)
leaves a margin of 3 and still fails on a wrong slot, mask or PE term (errors of order 1). float16 inputs:
both kernels read the same fp16 values and accumulate in fp32; the fused one rounds its output to fp16 once
(unit roundoff 2**-11 = 4.9e-4 of |out| <= 3 here), so 2e-3. Through the tiny UNet (float32, many layers after
the attention): 1e-4 on the latents, the bound ``tests/test_step_backends.py`` uses for the static step.
"""

from __future__ import annotations

import os

import pytest

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip(
        "runs under TRITON_INTERPRET=1 only (tests/test_fused_attention.py starts it)", allow_module_level=True
    )
triton = pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

import torch  # noqa: E402
from diffusers.models.attention_processor import Attention  # noqa: E402
from vcam.model import cached_attention  # noqa: E402
from vcam.model.cached_attention import (  # noqa: E402
    INTERPRETER_BLOCK_ROWS,
    TILE_ELEMENTS,
    fused_cached_attention,
    fused_static_attention,
    math_cached_attention,
    math_static_attention,
)
from vcam.model.step_backends import attach_step_backend  # noqa: E402
from vcam.model.stream_attention import (  # noqa: E402
    KVCache,
    SlotPositionalEncoding,
    StreamCaches,
    StreamContext,
    StreamTemporalAttnProcessor,
    resolve_backend,
    static_step_layout,
)
from vcam.model.tiny import build_tiny_pipeline  # noqa: E402

from tests.pipeline_helpers import moving_frames  # noqa: E402

FP32_TOLERANCE = 1e-5
FP16_TOLERANCE = 2e-3
LATENT_BOUND = 1e-4
FRAMES = 8 + 10  # warmup + 10 streamed: longer than the 16-slot window, the 8-slot ring wraps


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the fused kernel's launches (rows of each), so a test knows the kernel really ran."""
    counted: list[int] = []
    launch = cached_attention._launch

    def counting(*args: object, **kwargs: object) -> torch.Tensor:
        counted.append(args[2].shape[0])  # type: ignore[attr-defined]
        return launch(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cached_attention, "_launch", counting)
    return counted


def _split(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[rows, F, heads*d] -> [rows, heads, F, d]`` as the processor lays it out (a strided view)."""
    rows, frames, inner = x.shape
    return x.view(rows, frames, heads, inner // heads).transpose(1, 2)


def _visible_masks() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(eager valid [16], static visible [16]) of real caches: first stream frame, filling, full, wrapped."""
    masks = {}
    for name, streamed in (("first", 0), ("filling", 3), ("full", 7), ("wrapped", 20)):
        cache = KVCache(warmup_frames=8, window=16)
        cache.write_warmup(torch.zeros(1, 1, 8, 4), torch.zeros(1, 1, 8, 4))
        for _ in range(streamed):
            cache.append(torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4))
        _, _, visible, _ = static_step_layout([[cache]])
        cache.append(torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4))
        masks[name] = (torch.tensor(cache.layout().valid), visible[0])
    return masks


MASKS = _visible_masks()


def test_masks_cover_the_fill_states() -> None:
    assert int(MASKS["first"][0].sum()) == 9 and int(MASKS["first"][1].sum()) == 8
    assert int(MASKS["filling"][0].sum()) == 12 and not bool(MASKS["filling"][0][12:].any())
    assert bool(MASKS["full"][0].all()) and int(MASKS["full"][1].sum()) == 15
    assert bool(MASKS["wrapped"][0].all()) and not bool(MASKS["wrapped"][1][8 + 20 % 8])


@pytest.mark.parametrize("state", ["first", "filling", "full", "wrapped", "one slot"])
@pytest.mark.parametrize(("rows", "heads", "head_dim"), [(70, 8, 40), (INTERPRETER_BLOCK_ROWS, 2, 16), (5, 3, 8)])
def test_cached_kernel_equals_math(state: str, rows: int, heads: int, head_dim: int) -> None:
    generator = torch.Generator().manual_seed(rows + heads)
    query = _split(torch.randn(rows, 1, heads * head_dim, generator=generator), heads)  # [rows, heads, 1, d]
    kv = torch.randn(2, rows, heads, 16, head_dim, generator=generator)  # [2, rows, heads, window, d]
    pe = torch.randn(16, heads * head_dim, generator=generator)  # [window, inner]
    pe_key = _split(pe[None], heads)[0]  # [heads, window, d], strided as in the processor
    pe_value = _split(pe.flip(0)[None], heads)[0]  # [heads, window, d]
    if state == "one slot":
        valid: torch.Tensor | None = torch.zeros(16, dtype=torch.bool)
        valid[11] = True  # type: ignore[index]
    else:
        valid = MASKS[state][0]
        valid = None if bool(valid.all()) else valid
    expected = math_cached_attention(query, kv[0], kv[1], pe_key, pe_value, valid, 0.3)
    got = fused_cached_attention(query, kv[0], kv[1], pe_key, pe_value, valid, 0.3)
    assert got.shape == expected.shape == (rows, heads, 1, head_dim)
    torch.testing.assert_close(got, expected, rtol=FP32_TOLERANCE, atol=FP32_TOLERANCE)


@pytest.mark.parametrize("state", ["first", "filling", "full", "wrapped", "none visible"])
def test_static_kernel_equals_math(state: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the GPU's block of rows (8 at head_dim 40): 70 rows are 9 programs per head, the last one partial."""
    monkeypatch.setattr(cached_attention, "INTERPRETER_BLOCK_ROWS", TILE_ELEMENTS // (16 * 64))
    rows, heads, head_dim = 70, 8, 40
    generator = torch.Generator().manual_seed(7)
    raw = torch.randn(rows, 3, heads * head_dim, generator=generator)  # [rows, q/k/v, inner]
    query, new_key, new_value = (_split(raw[:, i : i + 1], heads) for i in range(3))  # [rows, heads, 1, d] each
    kv = torch.randn(2, rows, heads, 16, head_dim, generator=generator)
    pe = torch.randn(3, 17, heads, head_dim, generator=generator)  # [q/k/v, window + 1, heads, d]
    query_pe = pe[0, -1]  # [heads, d]
    pe_key, pe_value = pe[1].transpose(0, 1), pe[2].transpose(0, 1)  # [heads, window + 1, d], strided
    visible = torch.zeros(16, dtype=torch.bool) if state == "none visible" else MASKS[state][1]
    args = (query, query_pe, kv[0], kv[1], new_key, new_value, pe_key, pe_value, visible, 0.25)
    torch.testing.assert_close(
        fused_static_attention(*args), math_static_attention(*args), rtol=FP32_TOLERANCE, atol=FP32_TOLERANCE
    )


def test_float16_accumulates_in_float32() -> None:
    rows, heads, head_dim = 70, 8, 40
    generator = torch.Generator().manual_seed(8)
    query = torch.randn(rows, heads, 1, head_dim, generator=generator).half()
    kv = torch.randn(2, rows, heads, 16, head_dim, generator=generator).half()
    pe_key, pe_value = torch.randn(2, heads, 16, head_dim, generator=generator).half()
    valid = MASKS["filling"][0]
    got = fused_cached_attention(query, kv[0], kv[1], pe_key, pe_value, valid, 40**-0.5)
    assert got.dtype == torch.float16
    args = (query.float(), kv[0].float(), kv[1].float(), pe_key.float(), pe_value.float(), valid, 40**-0.5)
    torch.testing.assert_close(got.float(), math_cached_attention(*args), rtol=FP16_TOLERANCE, atol=FP16_TOLERANCE)


def test_backend_resolution_under_the_interpreter() -> None:
    cpu = torch.device("cpu")
    assert resolve_backend("fused", cpu) == "fused"
    assert resolve_backend("fused", cpu, cached=False) == "sdpa"  # the warmup shape has no fused kernel
    assert resolve_backend("auto", cpu) == "math"  # "auto" picks the kernel on CUDA only


def _layer(backend: str) -> tuple[Attention, StreamContext]:
    torch.manual_seed(0)
    attn = Attention(query_dim=64, heads=4, dim_head=16, bias=False).eval()
    context = StreamContext()
    attn.set_processor(StreamTemporalAttnProcessor(SlotPositionalEncoding(64, 24), 0, context, backend))
    return attn, context


@torch.no_grad()
def test_layer_with_two_entries_equals_math(launches: list[int]) -> None:
    """Two entries (two caches) in one call, eager stream mode, 20 frames past the warmup: the ring wraps."""
    frames = torch.randn(2 * 6, FRAMES, 64, generator=torch.Generator().manual_seed(9))  # [2 entries * rows, F, C]
    outputs = []
    for backend in ("math", "fused"):
        attn, context = _layer(backend)
        caches = StreamCaches(num_steps=2, num_layers=1)
        for entry in range(2):
            context.mode, context.entry_caches = "warmup", [caches.layers(entry)]
            attn(frames[entry * 6 : (entry + 1) * 6, :8])
        context.mode, context.entry_caches = "stream", [caches.layers(0), caches.layers(1)]
        outputs.append(torch.cat([attn(frames[:, index : index + 1]) for index in range(8, FRAMES)], dim=1))
    torch.testing.assert_close(outputs[1], outputs[0], rtol=FP32_TOLERANCE, atol=FP32_TOLERANCE)
    assert launches == [6] * (2 * (FRAMES - 8))  # one launch per entry per frame, 6 rows each


@torch.no_grad()
def test_compile_traces_the_math_kernel() -> None:
    """While torch.compile traces, "fused" gives way to the plain kernel (inductor fuses it): softmax is traced."""
    attn, context = _layer("fused")
    caches = [KVCache()]
    context.mode, context.entry_caches = "warmup", [caches]
    attn(torch.randn(6, 8, 64))
    context.mode = "stream"
    traced: list[str] = []

    def record(graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> object:
        traced.extend(str(node.target) for node in graph.graph.nodes)
        return graph.forward

    torch.compile(attn, backend=record, fullgraph=False)(torch.randn(6, 1, 64))
    assert any("softmax" in target for target in traced), traced


def _stream_latents(t_index_list: tuple[int, ...], backend: str, mode: str | None) -> list[torch.Tensor]:
    pipeline = build_tiny_pipeline(t_index_list=t_index_list, noise="fresh")
    pipeline.unet.set_attention_backend(backend)
    if mode is not None:
        attach_step_backend(pipeline.unet, mode)
    return [r.latent for image in moving_frames(FRAMES) for r in pipeline.step(image) if r.latent is not None]


@pytest.mark.parametrize(
    ("t_index_list", "mode"), [((30,), "static"), ((30, 40), "static"), ((10, 20, 30, 40), "static"), ((30, 40), None)]
)
def test_tiny_unet_stream_equals_math(t_index_list: tuple[int, ...], mode: str | None, launches: list[int]) -> None:
    """The whole tiny pipeline over a stream longer than the window: the static step (what the CUDA graph
    replays) at T = 1, 2, 4 and the eager stream step at T = 2 (its kernel is checked alone above, all states)."""
    reference = _stream_latents(t_index_list, "math", mode)
    assert not launches
    fused = _stream_latents(t_index_list, "fused", mode)
    assert launches  # every streamed call of every temporal layer ran the kernel
    assert len(fused) == len(reference) == FRAMES - (len(t_index_list) - 1)
    worst = max(float((a - b).abs().max()) for a, b in zip(fused, reference, strict=True))
    assert worst < LATENT_BOUND, worst
