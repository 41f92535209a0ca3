"""How many kernels one cached temporal attention layer launches per stream step: the plain kernels ("math")
against the fused Triton kernel ("fused"). Prints one JSON document.

    python benchmarks/attention_kernels.py [--rows 64] [--entries 1 2 4]

Counted on the CPU at the dispatcher: every ATen operation that computes (views, ``empty`` and host reads
excluded), each of which is one kernel launch on CUDA, plus one per fused-kernel launch. The fused path runs
under Triton's interpreter (set here before triton is imported), whose own array work is not counted. Rows:
the attention alone (``*_cached_attention`` for the eager step, ``*_static_attention`` for the static step
that CUDA graphs replay), and the whole layer (q/k/v/out projections, PE terms, the attention) per call, eager
with one entry and static with 1, 2 and 4 entries (T = 1, 2, 4 in one stream batch). The counts do not depend
on the sizes (--rows, 8 heads x 40 channels: SD1.5's first level).
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: the fused kernel runs on the CPU

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

NO_KERNEL = {"_unsafe_view", "empty", "detach", "_local_scalar_dense", "lift_fresh"}


class KernelCount(TorchDispatchMode):
    """Counts the ATen operations that launch a kernel (views and allocations without a fill excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.paused = False

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        if not self.paused and not func.is_view and name not in NO_KERNEL:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def count(fn: Callable[[], Any]) -> dict[str, Any]:
    from vcam.model import cached_attention

    launch = cached_attention._launch
    launches = [0]
    with KernelCount() as mode:

        def counted_launch(*args: Any) -> Any:
            launches[0] += 1
            mode.paused = True  # the interpreter's own tensor work is not a GPU kernel
            try:
                return launch(*args)
            finally:
                mode.paused = False

        cached_attention._launch = counted_launch  # type: ignore[assignment]
        try:
            fn()
        finally:
            cached_attention._launch = launch  # type: ignore[assignment]
    ops = dict(mode.ops)
    if launches[0]:
        ops["triton fused kernel"] = launches[0]
    return {"kernels": sum(ops.values()), "ops": ops}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--entries", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()

    from diffusers.models.attention_processor import Attention
    from vcam.model import cached_attention as kernels
    from vcam.model.stream_attention import (
        KVCache,
        SlotPositionalEncoding,
        StaticStep,
        StreamContext,
        StreamTemporalAttnProcessor,
        static_step_layout,
    )

    torch.manual_seed(0)
    rows, heads, head_dim, window, dim = args.rows, 8, 40, 16, 320
    query = torch.randn(rows, 1, heads, head_dim).transpose(1, 2)  # [rows, heads, 1, d], as the layer lays it out
    kv = torch.randn(2, rows, heads, window, head_dim)  # [2, rows, heads, window, d]
    pe = torch.randn(window + 1, heads, head_dim).transpose(0, 1)  # [heads, window + 1, d]
    filling = torch.arange(window) < 12  # a ring being filled: hidden slots
    result: dict[str, Any] = {"rows": rows, "heads": heads, "head_dim": head_dim, "window": window}
    pe_key, pe_value = pe[:, :window], pe[:, :window]  # [heads, window, d]
    for name in ("math", "fused"):
        cached = getattr(kernels, f"{name}_cached_attention")
        static = getattr(kernels, f"{name}_static_attention")
        result[f"{name} attention, eager, all slots visible"] = count(
            lambda cached=cached: cached(query, kv[0], kv[1], pe_key, pe_value, None, 0.2)
        )
        result[f"{name} attention, eager, ring filling"] = count(
            lambda cached=cached: cached(query, kv[0], kv[1], pe_key, pe_value, filling, 0.2)
        )
        result[f"{name} attention, static step"] = count(
            lambda static=static: static(query, pe[:, 0], kv[0], kv[1], query, query, pe, pe, filling, 0.2)
        )
    attn = Attention(query_dim=dim, heads=heads, dim_head=head_dim, bias=False).eval()
    table = SlotPositionalEncoding(dim, 24)
    with torch.no_grad():
        for name in ("math", "fused"):
            for entries in args.entries:
                context = StreamContext()
                attn.set_processor(StreamTemporalAttnProcessor(table, 0, context, name))
                caches = [[KVCache()] for _ in range(entries)]
                for layers in caches:
                    context.mode, context.entry_caches = "warmup", [layers]
                    attn(torch.randn(rows, 8, dim))
                context.mode, context.entry_caches = "stream", caches
                for _ in range(20):  # a full, wrapped ring
                    attn(torch.randn(entries * rows, 1, dim))
                frame = torch.randn(entries * rows, 1, dim)  # [entries * rows, 1, C]
                if entries == 1:
                    result[f"{name} layer, eager, 1 entry"] = count(functools.partial(attn, frame))
                slots, positions, visible, query_positions = static_step_layout(caches)
                tensors = [[layers[0].kv] for layers in caches]
                context.static = StaticStep(slots, positions, visible, query_positions, tensors)  # type: ignore[arg-type]
                result[f"{name} layer, static step, {entries} entries"] = count(functools.partial(attn, frame))
                context.static = None
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
