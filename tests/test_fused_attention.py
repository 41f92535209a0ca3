"""The fused Triton attention backend: when it is chosen, its checks under Triton's interpreter, and on CUDA.

The kernel-level and tiny-UNet equivalences run in ``tests/interpreted_fused_attention.py`` in a child pytest
with ``TRITON_INTERPRET=1`` (the interpreter must be asked for before triton is imported, and must not leak
into the other tests). The ``gpu`` tests run the compiled kernel on CUDA, in fp32 and fp16 and inside a
captured CUDA graph; tolerances are justified in the interpreted module's docstring.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from vcam.model import cached_attention
from vcam.model.cached_attention import (
    fused_cached_attention,
    fused_static_attention,
    math_cached_attention,
    math_static_attention,
)
from vcam.model.stream_attention import ATTENTION_BACKENDS, resolve_backend

ROOT = Path(__file__).resolve().parent.parent
INTERPRETED = ROOT / "tests" / "interpreted_fused_attention.py"
HAS_TRITON = importlib.util.find_spec("triton") is not None
NO_TRITON = "triton is not installed (pip install triton; the dev extra has it)"
CUDA_FP32_TOLERANCE = 2e-5  # the interpreter's 1e-5 (float32 summation order) with a margin for GPU matmuls
FP16_TOLERANCE = 2e-3


@pytest.fixture
def no_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


@pytest.mark.usefixtures("no_interpreter")
def test_fused_is_chosen_on_cuda_only_where_triton_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # devices as names: nothing runs on them here
    assert "fused" in ATTENTION_BACKENDS
    monkeypatch.setattr(cached_attention, "triton_available", lambda: True)
    assert resolve_backend("auto", cuda) == "fused"
    assert resolve_backend("fused", cuda) == "fused"
    assert resolve_backend("auto", cuda, cached=False) in ("xformers", "sdpa")  # the warmup shape
    assert resolve_backend("math", cuda) == "math" and resolve_backend("sdpa", cuda) == "sdpa"
    assert resolve_backend("auto", cpu) == "math" and resolve_backend("fused", cpu) == "math"
    assert resolve_backend("fused", cpu, cached=False) == "sdpa"
    monkeypatch.setattr(cached_attention, "triton_available", lambda: False)
    without = resolve_backend("auto", cuda, cached=False)  # xformers if installed, else SDPA
    assert resolve_backend("auto", cuda) == resolve_backend("fused", cuda) == without


def test_interpreter_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, expected in (("1", True), ("0", False), ("", False)):
        monkeypatch.setenv("TRITON_INTERPRET", value)
        assert cached_attention.interpreter_on() is expected
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not cached_attention.interpreter_on()


@pytest.mark.timeout(1800)
def test_kernel_under_the_triton_interpreter() -> None:
    """Runs tests/interpreted_fused_attention.py in a child pytest with TRITON_INTERPRET=1."""
    if not HAS_TRITON:
        pytest.skip(NO_TRITON)
    _child_pytest(INTERPRETED, {**os.environ, "TRITON_INTERPRET": "1", "HF_HUB_OFFLINE": "1"}, timeout=1700)


def _cuda_or_skip() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    if not HAS_TRITON:
        pytest.skip(NO_TRITON)
    assert cached_attention.kernel_failure() is None  # an earlier failure would make "fused" run the plain kernels


def _static_inputs(dtype: torch.dtype, rows: int = 4096, heads: int = 8, head_dim: int = 40) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    raw = torch.randn(rows, 3, heads, head_dim, generator=generator).transpose(1, 2)  # [rows, heads, q/k/v, d]
    kv = torch.randn(2, rows, heads, 16, head_dim, generator=generator)  # [2, rows, heads, window, d]
    pe = torch.randn(3, 17, heads, head_dim, generator=generator)  # [q/k/v, window + 1, heads, d]
    visible = torch.arange(16) < 11  # a ring being filled: 8 warmup + 3 old frames
    tensors = [raw[:, :, 0:1], pe[0, -1], kv[0], kv[1], raw[:, :, 1:2], raw[:, :, 2:3]]
    tensors += [pe[1].transpose(0, 1), pe[2].transpose(0, 1)]
    return [t.to("cuda", dtype) for t in tensors] + [visible.cuda()]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kernels_on_cuda_equal_math(dtype: torch.dtype) -> None:
    _cuda_or_skip()
    tolerance = CUDA_FP32_TOLERANCE if dtype == torch.float32 else FP16_TOLERANCE
    inputs = _static_inputs(dtype)
    as_fp32 = [t.float() if t.is_floating_point() else t for t in inputs]
    got = fused_static_attention(*inputs, 40**-0.5)  # type: ignore[call-arg]
    assert got.dtype == dtype
    expected = math_static_attention(*as_fp32, 40**-0.5)  # type: ignore[call-arg]
    torch.testing.assert_close(got.float(), expected, rtol=tolerance, atol=tolerance)
    query, _, keys, values, _, _, pe_key, pe_value, visible = inputs
    for valid in (None, visible):
        got = fused_cached_attention(query, keys, values, pe_key[:, :16], pe_value[:, :16], valid, 0.2)
        expected = math_cached_attention(
            query.float(), keys.float(), values.float(), pe_key[:, :16].float(), pe_value[:, :16].float(), valid, 0.2
        )
        torch.testing.assert_close(got.float(), expected, rtol=tolerance, atol=tolerance)
    assert cached_attention.kernel_failure() is None  # the kernel itself ran, not the fallback


@pytest.mark.gpu
def test_static_kernel_replays_in_a_cuda_graph() -> None:
    """Captured once, replayed after every input (the mask too) changed in place: no host sync, no baked values."""
    _cuda_or_skip()
    inputs = _static_inputs(torch.float16)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fused_static_attention(*inputs, 40**-0.5)  # type: ignore[call-arg]  # compiles the kernel before capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fused_static_attention(*inputs, 40**-0.5)  # type: ignore[call-arg]
    generator = torch.Generator(device="cuda").manual_seed(12)
    for tensor in inputs[:-1]:
        tensor.copy_(torch.randn(tensor.shape, generator=generator, device="cuda"))
    inputs[-1].copy_(torch.arange(16, device="cuda") % 3 != 0)
    graph.replay()
    expected = math_static_attention(*[t.float() if t.is_floating_point() else t for t in inputs], 40**-0.5)  # type: ignore[call-arg]
    torch.testing.assert_close(out.float(), expected, rtol=FP16_TOLERANCE, atol=FP16_TOLERANCE)
    assert cached_attention.kernel_failure() is None


@pytest.mark.gpu
@pytest.mark.parametrize("t_index_list", [(30,), (30, 40), (10, 20, 30, 40)])
def test_cudagraph_step_with_the_fused_kernel_equals_math(t_index_list: tuple[int, ...]) -> None:
    """The tiny pipeline on CUDA in float32 over a stream longer than the window: the CUDA-graph step with the
    fused kernel against the eager reference path with the plain kernel (the bound of test_step_backends)."""
    _cuda_or_skip()
    from vcam.model.step_backends import attach_step_backend
    from vcam.model.tiny import build_tiny_pipeline

    from tests.pipeline_helpers import moving_frames

    runs = []
    for backend, mode in (("math", None), ("fused", "cudagraph")):
        base = build_tiny_pipeline(t_index_list=t_index_list, noise="fresh")
        for model in (base.unet, base.prompt_encoder.text_encoder, base.codec.vae, base.depth_encoder.model):  # type: ignore[union-attr]
            torch.nn.Module.to(model, device="cuda")
        pipeline = base.sibling()
        pipeline.unet.set_attention_backend(backend)
        if mode is not None:
            attach_step_backend(pipeline.unet, mode)
        frames = moving_frames(8 + 20)
        runs.append([r.latent.float().cpu() for image in frames for r in pipeline.step(image) if r.latent is not None])
    assert len(runs[0]) == len(runs[1])
    worst = max(float((a - b).abs().max()) for a, b in zip(runs[0], runs[1], strict=True))
    assert worst < 1e-4, worst
    assert cached_attention.kernel_failure() is None


def _child_pytest(module: Path, env: dict[str, str], timeout: int) -> None:
    """Run ``module`` in a child pytest (a clean interpreter: triton's state stays there); all must pass."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", str(module)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    report = result.stdout[-8000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "skipped" not in summary and "failed" not in summary, report


def test_a_kernel_that_cannot_compile_gives_way_to_the_plain_kernels() -> None:
    """Runs tests/fused_fallback_child.py in a child pytest without the interpreter (triton then cannot compile
    here: no GPU driver)."""
    if not HAS_TRITON:
        pytest.skip(NO_TRITON)
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    _child_pytest(ROOT / "tests" / "fused_fallback_child.py", env, timeout=600)
