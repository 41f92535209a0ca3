"""The fused kernel where triton cannot compile it (no GPU driver, no interpreter): the plain kernels answer.

Not collected by the suite itself: ``tests/test_fused_attention.py`` runs it in a child pytest without
``TRITON_INTERPRET``, so triton's compiler state stays out of the suite's process.
"""

from __future__ import annotations

import os

import pytest

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    pytest.skip("runs without Triton's interpreter only", allow_module_level=True)
pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

import torch  # noqa: E402
from vcam.model import cached_attention  # noqa: E402
from vcam.model.cached_attention import fused_cached_attention, math_cached_attention  # noqa: E402
from vcam.model.stream_attention import resolve_backend  # noqa: E402


def test_a_kernel_that_cannot_compile_gives_way_to_the_plain_kernels(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Here no GPU driver exists, so triton cannot compile the kernel: the plain kernels answer, the log says
    why once, and "auto" stops choosing the kernel."""
    monkeypatch.setattr(cached_attention, "_failures", [])
    generator = torch.Generator().manual_seed(13)
    query = torch.randn(6, 2, 1, 8, generator=generator)  # [rows, heads, 1, d]
    kv = torch.randn(2, 6, 2, 16, 8, generator=generator)  # [2, rows, heads, window, d]
    pe_key, pe_value = torch.randn(2, 2, 16, 8, generator=generator)  # [heads, window, d] each
    valid = torch.arange(16) < 10
    got = fused_cached_attention(query, kv[0], kv[1], pe_key, pe_value, valid, 0.3)
    torch.testing.assert_close(got, math_cached_attention(query, kv[0], kv[1], pe_key, pe_value, valid, 0.3))
    failure = cached_attention.kernel_failure()
    assert failure is not None and "fused attention kernel failed" in caplog.text
    assert not cached_attention.can_run(torch.device("cuda"))
    assert resolve_backend("auto", torch.device("cuda")) == resolve_backend("auto", torch.device("cuda"), cached=False)
    fused_cached_attention(query, kv[0], kv[1], pe_key, pe_value, valid, 0.3)
    assert caplog.text.count("fused attention kernel failed") == 1 and cached_attention.kernel_failure() == failure
